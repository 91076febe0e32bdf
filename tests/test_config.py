"""Configuration: defaults, the TOML file, MEDIAGATE_* environment, --set, and errors that name key and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import Config, load_config, locate_keys
from gateway.errors import ConfigError
from gateway.node import Node

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str, name: str = "mediagate.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_load() -> None:
    config = load_config(None, environ={})
    assert isinstance(config, Config)
    assert config.http.port == 8080 and config.http.host == "0.0.0.0" and config.http.max_json_kb == 1024
    assert config.log.level == "info" and config.auth.bootstrap_key is True
    assert config.rooms.empty_timeout_s == 300 and config.rooms.max_participants == 0
    assert config.files.max_size_mb == 50 and "png" in config.files.allowed_types
    assert config.media.canvas_width == 1280 and config.media.canvas_height == 720
    assert config.plugins.disabled == [] and config.plugins.only is None
    assert config.store_url.startswith("sqlite+aiosqlite:///") and config.store_url.endswith("mediagate.db")
    assert config.files_dir == config.node.data_dir / "files"


def test_file_values_load(tmp_path: Path) -> None:
    path = write(tmp_path, '[http]\nport = 9001\n\n[rooms]\nmax_participants = 12\n\n[auth.api_keys]\nak = "sk"\n')
    config = load_config(path, environ={})
    assert config.http.port == 9001 and config.rooms.max_participants == 12
    assert config.auth.api_keys == {"ak": "sk"}


def test_unknown_key_names_key_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "# comment\n[http]\nport = 8080\n\n[rooms]\nmax_participants = 3\nmax_particpants = 4\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    error = info.value
    assert error.key == "rooms.max_particpants"
    assert error.line == 7
    message = str(error)
    assert f"{path}:7" in message and "rooms.max_particpants" in message and "unknown key" in message


def test_unknown_section_names_it(tmp_path: Path) -> None:
    path = write(tmp_path, "[http]\nport = 1\n[htttp]\nport = 2\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert info.value.key == "htttp" and info.value.line == 3
    assert f"{path}:3" in str(info.value)


def test_unknown_dotted_key_names_its_own_line(tmp_path: Path) -> None:
    """`log.level = ...` written inside [node] is the unknown key node.log, on line 6 (not the [node] line)."""
    path = write(tmp_path, "[media]\nfps = 30\n\n[node]\nid = \"n1\"\nlog.level = \"info\"\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert info.value.key == "node.log" and info.value.line == 6


def test_bad_value_type_names_key(tmp_path: Path) -> None:
    path = write(tmp_path, '[http]\nhost = "::"\nport = "eighty"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert info.value.key == "http.port" and info.value.line == 3
    message = str(info.value)
    assert "http.port" in message and f"{path}:3" in message and "'eighty'" in message


@pytest.mark.parametrize(("text", "key"), [
    ("[http]\nport = 70000\n", "http.port"),
    ('[log]\nlevel = "loud"\n', "log.level"),
    ("[files]\nmax_size_mb = 0\n", "files.max_size_mb"),
    ('[media]\nx264_preset = "placebo"\n', "media.x264_preset"),
    ("[rooms]\nempty_timeout_s = -1\n", "rooms.empty_timeout_s"),
])
def test_out_of_range_values(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), environ={})
    assert info.value.key == key and info.value.line == 2
    assert key in str(info.value)


def test_invalid_toml_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "[http]\nport = 8080\nhost = \n")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert info.value.line == 3
    assert f"{path}:3" in str(info.value) and "invalid TOML" in str(info.value)


def test_invalid_toml_message_has_no_empty_key(tmp_path: Path) -> None:
    """A file error without a key reads 'file:3: invalid TOML ...', not 'file:3: : invalid TOML ...'."""
    path = write(tmp_path, "[http]\nport = 8080\nhost = \n")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert str(info.value).startswith(f"{path}:3: invalid TOML"), str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.toml", environ={})
    assert "nope.toml" in str(info.value) and "cannot read" in str(info.value)


def test_env_override() -> None:
    config = load_config(None, environ={"MEDIAGATE_HTTP__PORT": "9000", "MEDIAGATE_LOG__LEVEL": "debug",
                                        "MEDIAGATE_FILES__ALLOWED_TYPES": '["png"]', "OTHER_HTTP__PORT": "1",
                                        "MEDIAGATE_CONFIG": "/ignored.toml"})
    assert config.http.port == 9000 and config.log.level == "debug" and config.files.allowed_types == ["png"]


def test_env_bad_value_names_key() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, environ={"MEDIAGATE_HTTP__PORT": "lots"})
    assert info.value.key == "http.port" and "http.port" in str(info.value)
    with pytest.raises(ConfigError) as info:
        load_config(None, environ={"MEDIAGATE_HTTP__PROT": "1"})
    assert info.value.key == "http.prot"


def test_precedence_set_over_env_over_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[http]\nport = 1111\nmax_json_kb = 11\n\n[rooms]\nmax_rooms = 5\n")
    environ = {"MEDIAGATE_HTTP__PORT": "2222", "MEDIAGATE_HTTP__MAX_JSON_KB": "22"}
    config = load_config(path, overrides=["http.port=3333"], environ=environ)
    assert config.http.port == 3333  # --set beats env and file
    assert config.http.max_json_kb == 22  # env beats file
    assert config.rooms.max_rooms == 5  # file beats defaults
    assert load_config(path, environ=environ).http.port == 2222
    assert load_config(path, environ={}).http.port == 1111


def test_set_override_errors() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides=["http.port"], environ={})
    assert "http.port" in str(info.value)
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides=["http.nope=1"], environ={})
    assert info.value.key == "http.nope"
    config = load_config(None, overrides=['node.id="edge-1"', "media.fps=25", "auth.bootstrap_key=false"], environ={})
    assert (config.node.id, config.media.fps, config.auth.bootstrap_key) == ("edge-1", 25, False)


def _node_config(tmp_path: Path, text: str) -> Config:
    return load_config(write(tmp_path, text), overrides=[f'node.data_dir="{tmp_path / "data"}"'], environ={})


def test_plugin_section_unknown_key_fails_at_node_construction(tmp_path: Path) -> None:
    text = '[plugins.webhook]\nurls = []\nkey = "k"\nretries = 3\n'
    config = _node_config(tmp_path, text)  # plugin sections are validated by their plugin
    with pytest.raises(ConfigError) as info:
        Node(config)
    assert info.value.key == "plugins.webhook.retries"
    assert info.value.line == 4
    assert "plugins.webhook.retries" in str(info.value) and ":4:" in str(info.value)


def test_plugin_section_bad_value(tmp_path: Path) -> None:
    config = _node_config(tmp_path, "[plugins.webhook]\ntimeout_s = \"soon\"\n")
    with pytest.raises(ConfigError) as info:
        Node(config)
    assert info.value.key == "plugins.webhook.timeout_s" and info.value.line == 2


def test_unknown_plugin_section(tmp_path: Path) -> None:
    config = _node_config(tmp_path, "[plugins]\ndisabled = []\n\n[plugins.nosuch]\nenabled = true\n")
    with pytest.raises(ConfigError) as info:
        Node(config)
    assert info.value.key == "plugins.nosuch" and info.value.line == 4
    assert "nosuch" in str(info.value)


def test_disabled_plugin_section_is_accepted(tmp_path: Path) -> None:
    config = _node_config(tmp_path, '[plugins]\ndisabled = ["webhook"]\n\n[plugins.webhook]\nurls = []\n')
    node = Node(config)
    assert "webhook" not in node.pm.plugin_names()


def test_locate_keys() -> None:
    text = '# c\n[a]\nx = 1\n"y" = """multi\nline = 3\n"""\n[a.b]\nz.w = 2\n[[arr]]\nq = 1\n'
    lines = locate_keys(text)
    assert lines["a"] == 2 and lines["a.x"] == 3 and lines["a.y"] == 4
    assert "a.line" not in lines  # inside a multi-line string
    assert lines["a.b"] == 7 and lines["a.b.z.w"] == 8 and lines["arr.q"] == 10


def test_shipped_config_loads(tmp_path: Path) -> None:
    path = REPO / "conf" / "mediagate.toml"
    if not path.exists():
        pytest.fail("conf/mediagate.toml is missing from the repository")
    config = load_config(path, environ={})
    assert config.http.port == 8080
    # and a node accepts its plugin sections
    node = Node(load_config(path, overrides=[f'node.data_dir="{tmp_path / "data"}"'], environ={}))
    assert {"webhook", "layouts", "record", "storage_local", "test_source"} <= set(node.pm.plugin_names())
