"""The `mediagate` command, run as a real subprocess (`python -m gateway`)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from gateway import __version__
from gateway.security import TokenService, load_or_create_secret

REPO = Path(__file__).resolve().parents[1]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAGATE_")}
    return subprocess.run([sys.executable, "-m", "gateway", *args], capture_output=True, text=True, timeout=120,
                          cwd=REPO, env={**clean, **(env or {})})


def config_file(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "mediagate.toml"
    path.write_text(f'[node]\ndata_dir = "{tmp_path / "data"}"\n\n[log]\nlevel = "warning"\n{extra}', encoding="utf-8")
    return path


def test_version() -> None:
    result = run("version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"mediagate {__version__}"


def test_console_script_version() -> None:
    script = Path(sys.executable).with_name("mediagate")
    assert script.exists(), f"the console script is not installed next to {sys.executable}"
    result = subprocess.run([str(script), "version"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == f"mediagate {__version__}"


def test_config_prints_effective_configuration_without_secrets(tmp_path: Path) -> None:
    path = config_file(tmp_path, '\n[auth]\njwt_secret = "topsecret"\n\n[auth.api_keys]\nak = "sk-very-secret"\n')
    result = run("config", "--config", str(path), "--set", "http.port=9100")
    assert result.returncode == 0, result.stderr
    assert '"port": 9100' in result.stdout
    assert "sk-very-secret" not in result.stdout and "topsecret" not in result.stdout
    assert '"ak": "***"' in result.stdout


def test_config_with_bad_file_exits_2_naming_the_key(tmp_path: Path) -> None:
    path = config_file(tmp_path, "\n[rooms]\nmax_participants = 3\nmax_partcipants = 4\n")
    result = run("config", "--config", str(path))
    assert result.returncode == 2
    assert result.stdout == ""
    assert "rooms.max_partcipants" in result.stderr
    assert f"{path}:9" in result.stderr
    assert "configuration error" in result.stderr


def test_config_bad_env_value_exits_2(tmp_path: Path) -> None:
    result = run("config", "--config", str(config_file(tmp_path)), env={"MEDIAGATE_HTTP__PORT": "many"})
    assert result.returncode == 2
    assert "http.port" in result.stderr


def test_join_token(tmp_path: Path) -> None:
    path = config_file(tmp_path)
    result = run("token", "--room", "r", "--identity", "alice", "--name", "Alice", "--config", str(path))
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert re.fullmatch(r"[\w-]+\.[\w-]+\.[\w-]+", token), result.stdout
    # signed with the node's own secret (created on first use under data_dir)
    secret = load_or_create_secret("", tmp_path / "data")
    who = TokenService(secret).verify(token)
    assert (who.kind, who.room_id, who.subject, who.name, who.permissions) == ("participant", "r", "alice",
                                                                               "Alice", 254)


def test_join_token_permissions_hex(tmp_path: Path) -> None:
    path = config_file(tmp_path)
    result = run("token", "--room", "r", "--identity", "bob", "--permissions", "0x2A", "--config", str(path))
    assert result.returncode == 0, result.stderr
    who = TokenService(load_or_create_secret("", tmp_path / "data")).verify(result.stdout.strip())
    assert who.permissions == 0x2A


def test_join_token_needs_identity(tmp_path: Path) -> None:
    result = run("token", "--room", "r", "--config", str(config_file(tmp_path)))
    assert result.returncode == 2
    assert "--identity" in result.stderr and result.stdout == ""


def test_api_token_without_keys_fails(tmp_path: Path) -> None:
    result = run("token", "--config", str(config_file(tmp_path)))
    assert result.returncode == 1
    assert "keys create" in result.stderr and result.stdout == ""


def test_keys_create_list_revoke(tmp_path: Path) -> None:
    path = config_file(tmp_path)
    created = run("keys", "create", "--name", "ci", "--config", str(path))
    assert created.returncode == 0, created.stderr
    match = re.fullmatch(r"access_key = (\S+)\nsecret_key = (\S+)\n", created.stdout)
    assert match, created.stdout
    access, secret = match.groups()
    listed = run("keys", "list", "--config", str(path))
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines() == [f"{access}\tci\tactive"]
    # the secret is stored hashed only
    db = (tmp_path / "data" / "mediagate.db").read_bytes()
    assert secret.encode() not in db and access.encode() in db
    # the new key works for an API token
    token = run("token", "--access-key", access, "--config", str(path))
    assert token.returncode == 0
    who = TokenService(load_or_create_secret("", tmp_path / "data")).verify(token.stdout.strip())
    assert who.is_operator and who.subject == access
    revoked = run("keys", "revoke", access, "--config", str(path))
    assert revoked.returncode == 0 and revoked.stdout.strip() == f"revoked {access}"
    assert run("keys", "list", "--config", str(path)).stdout.splitlines() == [f"{access}\tci\trevoked"]
    missing = run("keys", "revoke", "AKnothere", "--config", str(path))
    assert missing.returncode == 1 and "no such stored key" in missing.stderr


def test_keys_list_shows_configured_keys(tmp_path: Path) -> None:
    path = config_file(tmp_path, '\n[auth.api_keys]\nfromfile = "s"\n')
    listed = run("keys", "list", "--config", str(path))
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines() == ["fromfile\t(config file)"]


def test_config_from_environment_variable(tmp_path: Path) -> None:
    path = config_file(tmp_path, "\n[http]\nport = 9555\n")
    result = run("config", env={"MEDIAGATE_CONFIG": str(path)})
    assert result.returncode == 0, result.stderr
    assert '"port": 9555' in result.stdout


def test_unknown_subcommand() -> None:
    result = run("frobnicate")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr


def test_status_unreachable_node() -> None:
    result = run("status", "--url", "http://127.0.0.1:9")
    assert result.returncode == 1
    assert "cannot reach" in result.stderr


def test_serve_refuses_a_bad_config_naming_key_and_line(tmp_path: Path) -> None:
    path = config_file(tmp_path, "\n[http]\nport = \"eighty\"\n")
    result = run("serve", "--config", str(path))
    assert result.returncode == 2
    assert f"{path}:8: http.port" in result.stderr
    assert not (tmp_path / "data" / "mediagate.db").exists()  # nothing was started or written


def test_serve_refuses_a_bad_plugin_config(tmp_path: Path) -> None:
    path = config_file(tmp_path, "\n[plugins.webhook]\nurl = \"http://x\"\n")
    result = run("serve", "--config", str(path))
    assert result.returncode == 2
    assert f"{path}:8: plugins.webhook.url: unknown key" in result.stderr
