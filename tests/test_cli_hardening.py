"""Issue 6 items 5 and 10: `mediagate token --ttl`, config errors that name their source,
paths relative to the config file, `make run PORT=`, the banner, and the READMEs."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.config import load_config
from gateway.errors import ConfigError
from gateway.node import reachable_addresses
from gateway.security import TokenService, load_or_create_secret

REPO = Path(__file__).resolve().parents[1]


def run(*args: str, cwd: Path = REPO, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAGATE_")}
    clean["PYTHONPATH"] = str(REPO)
    return subprocess.run([sys.executable, "-m", "gateway", *args], capture_output=True, text=True, timeout=120,
                          cwd=cwd, env={**clean, **(env or {})})


def cli(*args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """`mediagate ARGS` in this process (faster than a subprocess): (exit code, stdout, stderr)."""
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def write_config(path: Path, data_dir: str, extra: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'[node]\ndata_dir = "{data_dir}"\n\n[log]\nlevel = "warning"\n\n'
                    f'[auth]\nmax_token_ttl_s = 1000\n\n[auth.api_keys]\nak = "sk-secret"\n{extra}', encoding="utf-8")
    return path


def test_token_ttl_is_positive_and_capped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path / "m.toml", str(tmp_path / "data"))
    for ttl in ("0", "-5"):
        code, out, err = cli("token", "--config", str(path), "--ttl", ttl, capsys=capsys)
        assert code == 2 and out == "", (ttl, out)
        assert "--ttl" in err
    tokens = TokenService(load_or_create_secret("", tmp_path / "data"))
    for extra in ([], ["--room", "r", "--identity", "a"], ["--access-key", "ak"]):
        code, out, err = cli("token", "--config", str(path), "--ttl", "999999", *extra, capsys=capsys)
        assert code == 0, err
        who = tokens.verify(out.strip())
        assert who.expires_at is not None and who.expires_at - time.time() <= 1000 + 5
        assert "max_token_ttl_s" in err
    code, out, _ = cli("token", "--config", str(path), "--ttl", "60", capsys=capsys)
    assert tokens.verify(out.strip()).expires_at - time.time() <= 65
    code, out, err = cli("token", "--config", str(path), "--access-key", "AKnosuch", capsys=capsys)
    assert code == 1 and out == "" and "AKnosuch" in err  # the server would refuse its tokens


def test_cli_and_serve_resolve_data_dir_against_the_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    config = write_config(tmp_path / "etc" / "mediagate.toml", "state")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code, _, err = cli("keys", "create", "--config", str(config), capsys=capsys)
    assert code == 0, err
    assert (tmp_path / "etc" / "state" / "mediagate.db").exists()
    assert not (elsewhere / "state").exists()
    # the config the node serves with points at the same place, from any directory
    assert load_config(config, environ={}).node.data_dir == tmp_path / "etc" / "state"
    code, out, err = cli("token", "--config", str(config), capsys=capsys)
    assert code == 0, err
    TokenService(load_or_create_secret("", tmp_path / "etc" / "state")).verify(out.strip())
    # a relative path given on the command line is relative to where the command runs
    assert load_config(config, overrides=['node.data_dir="here"'], environ={}).node.data_dir == Path("here")


def test_plugin_paths_in_the_file_are_relative_to_the_file(tmp_path: Path) -> None:
    from gateway.pluginmanager import PluginManager

    etc = tmp_path / "etc"
    etc.mkdir()
    config = etc / "mediagate.toml"
    config.write_text('[spool]\ndir = "spool"\n[media]\nfont = "fonts/card.ttf"\n'
                      '[plugins.storage_local]\ndir = "recordings"\n'
                      '[plugins.play]\nallowed_dirs = ["media", "/srv/media"]\n', encoding="utf-8")
    loaded = load_config(config, environ={})
    assert loaded.spool.dir == etc / "spool"
    assert loaded.media.font == str(etc / "fonts" / "card.ttf")
    manager = PluginManager()
    manager.load(loaded)
    assert manager.get_plugin("storage_local").config.dir == etc / "recordings"
    assert manager.get_plugin("play").config.allowed_dirs == [etc / "media", Path("/srv/media")]
    # the same key from the environment stays relative to the current directory
    loaded = load_config(config, environ={"MEDIAGATE_PLUGINS__STORAGE_LOCAL__DIR": "elsewhere"})
    manager = PluginManager()
    manager.load(loaded)
    assert manager.get_plugin("storage_local").config.dir == Path("elsewhere")


def test_config_errors_name_their_real_source_and_all_of_them(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text("[rooms]\nmax_rooms = 1\nmax_partcipants = 4\n\n[media]\nfps = 500\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides=["http.max_json_kb=-1"], environ={"MEDIAGATE_HTTP__PORT": "many"})
    text = str(info.value)
    lines = text.splitlines()
    assert len(lines) == 4, text
    assert f"{path}:3: rooms.max_partcipants: unknown key" in lines
    assert any(line.startswith(f"{path}:6: media.fps") for line in lines), text
    assert any(line.startswith("environment variable MEDIAGATE_HTTP__PORT: http.port") for line in lines), text
    assert any(line.startswith("--set http.max_json_kb=-1: http.max_json_kb") for line in lines), text
    # the environment's error is not blamed on a line of the file
    assert not any(line.startswith(f"{path}:") and "http.port" in line for line in lines)
    # the CLI prints them all
    result = run("config", "--config", str(path), "--set", "http.max_json_kb=-1",
                 env={"MEDIAGATE_HTTP__PORT": "many"})
    assert result.returncode == 2
    assert "MEDIAGATE_HTTP__PORT" in result.stderr and "--set http.max_json_kb=-1" in result.stderr
    assert "rooms.max_partcipants" in result.stderr and "media.fps" in result.stderr


def test_plugin_section_errors_name_the_variable(tmp_path: Path) -> None:
    from gateway.node import Node

    config = load_config(None, overrides=[f'node.data_dir="{tmp_path}"'],
                         environ={"MEDIAGATE_PLUGINS__WEBHOOK__TIMEOUT_S": "soon"})
    with pytest.raises(ConfigError) as info:
        Node(config)
    assert str(info.value).startswith("environment variable MEDIAGATE_PLUGINS__WEBHOOK__TIMEOUT_S: "
                                      "plugins.webhook.timeout_s"), str(info.value)


def test_config_command_checks_plugin_sections_like_serve(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path / "m.toml", str(tmp_path / "data"), "\n[plugins.webhook]\nretries = 3\n")
    code, out, err = cli("config", "--config", str(path), capsys=capsys)
    assert code == 2, out
    assert "plugins.webhook.retries" in err and f"{path}:" in err
    assert out == ""


def test_make_run_takes_a_port() -> None:
    result = subprocess.run(["make", "-n", "--no-print-directory", "run", "PORT=9000"], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "mediagate serve --config conf/mediagate.toml --set http.port=9000" in result.stdout
    assert "make run PORT=9000" in (REPO / "README.md").read_text()


def test_readmes_stand_on_their_own() -> None:
    readme = (REPO / "README.md").read_text()
    assert "../shared" not in readme  # a clone of the project has no such directory
    plugin_readme = (REPO / "contrib" / "mediagate-example-plugin" / "README.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", plugin_readme, re.S)
    assert blocks
    commands = [line for block in blocks for line in block.splitlines() if re.match(r"\s*(\$ )?mediagate\b", line)]
    assert commands == [], commands  # the console script lives in the venv: .venv/bin/mediagate


def test_wildcard_bind_lists_addresses_that_reach_it() -> None:
    assert reachable_addresses("127.0.0.1") == ["127.0.0.1"]
    found = reachable_addresses("0.0.0.0")
    assert found[0] == "127.0.0.1" and "0.0.0.0" not in found
    assert all(not address.startswith("127.") for address in found[1:])


def _banner(config: Path) -> str:
    """Start `mediagate serve`, return its banner, stop it."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAGATE_")}
    proc = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--config", str(config)], cwd=REPO,
                            env={**clean, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()  # type: ignore[union-attr]
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                if proc.poll() is not None:
                    break
                continue
            seen.append(line)
            if "export TOKEN=" in line or "mediagate token" in line:
                return "".join(seen)
        raise AssertionError("no banner:\n" + "".join(seen))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def test_operator_token_is_printed_on_the_first_start_only(tmp_path: Path) -> None:
    config = tmp_path / "m.toml"
    config.write_text(f'[node]\ndata_dir = "{tmp_path / "data"}"\n\n[http]\nhost = "0.0.0.0"\nport = 0\n\n'
                      '[log]\nlevel = "warning"\n\n[plugins.rtmp]\nport = 0\n\n[plugins.sip]\nport = 0\n',
                      encoding="utf-8")
    first = _banner(config)
    assert "export TOKEN=" in first and "secret_key = " in first
    assert re.search(r"serving on http://127\.0\.0\.1:\d+", first), first
    assert "0.0.0.0" not in first
    second = _banner(config)
    assert "export TOKEN=" not in second and "secret_key" not in second
    assert "mediagate token" in second
