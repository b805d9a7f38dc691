"""``--ray`` / the daemon's ``ray`` keys without a cluster: what is accepted, what is refused (one line naming
the fix), the missing-Ray message, and that the single-machine path never imports Ray."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agent.daemon.config import ConfigError, parse_config
from agent.scale.cluster import parse_address

ROOT = Path(__file__).resolve().parents[1]
MINIMAL = {"environments": [{"spec": "arithmetic"}]}
SCRIPTED = "python:tests.daemon_scripted:policy"


@pytest.mark.parametrize("address", ["local", "auto", "10.0.0.5:6379", "ray://head.example:10001"])
def test_addresses_accepted(address):
    assert parse_address(f" {address} ") == address


@pytest.mark.parametrize("address", ["", "yes", "ray://", "http://head:10001", "head", "ray://head"])
def test_bad_addresses_name_the_forms(address):
    with pytest.raises(ValueError, match="use local .*auto .*HOST:PORT or ray://HOST:10001"):
        parse_address(address)


def test_daemon_config_accepts_the_ray_keys():
    cfg = parse_config({**MINIMAL, "ray": "local", "ray_workers": 3, "ray_retries": 1})
    opts = cfg.ray_options
    assert (opts.address, opts.workers, opts.max_retries) == ("local", 3, 1)
    assert parse_config(MINIMAL).ray_options is None  # the default: collection in the daemon's process


@pytest.mark.parametrize(("data", "message"), [
    ({"ray": "nowhere"}, r"ray: bad Ray address 'nowhere'"),
    ({"ray": "local", "ray_workers": 0}, r"ray_workers: Input should be greater than or equal to 1"),
    ({"ray_workers": 2}, r'ray_workers = 2 is set but ray is not: add ray = "local"'),
    ({"ray": "local", "ray_retries": -1}, r"ray_retries: Input should be greater than or equal to 0"),
    ({"ray": "local", "ray_worker": 2}, r"ray_worker: unknown key"),
])
def test_daemon_config_rejects_bad_ray_keys_naming_the_fix(data, message):
    with pytest.raises(ConfigError, match=message):
        parse_config({**MINIMAL, **data})


def test_daemon_config_without_ray_installed_names_the_extra(monkeypatch):
    monkeypatch.setattr("agent.scale.cluster.ray_installed", lambda: False)
    with pytest.raises(ConfigError, match=r"pip install 'selfevolve\[scale\]'"):
        parse_config({**MINIMAL, "ray": "local"})


@pytest.mark.parametrize(("args", "message"), [
    (["--ray", "nowhere"], "--ray: bad Ray address 'nowhere'"),
    (["--ray-workers", "2"], "--ray-workers needs --ray: add --ray local"),
    (["--ray", "local", "--ray-workers", "0"], "Invalid value for '--ray-workers'"),
])
def test_cli_refuses_bad_ray_options_in_one_line(tmp_path, args, message):
    from agent.cli import app

    ws = tmp_path / "ws"
    result = CliRunner().invoke(app, ["run", "--env", "arithmetic", "-n", "2", "--model", SCRIPTED,
                                      "--workspace", str(ws), *args])
    assert result.exit_code == 2 and message in " ".join(result.output.split())
    assert not ws.exists()  # refused before anything was created


def test_cli_without_ray_installed_names_the_extra(tmp_path, monkeypatch):
    from agent.cli import app

    monkeypatch.setattr("agent.scale.cluster.ray_installed", lambda: False)
    result = CliRunner().invoke(app, ["run", "--env", "arithmetic", "-n", "2", "--model", SCRIPTED,
                                      "--workspace", str(tmp_path / "ws"), "--ray", "local"])
    assert result.exit_code == 2 and "pip install 'selfevolve[scale]'" in " ".join(result.output.split())


def test_the_single_machine_path_never_imports_ray(tmp_path):
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "import memory.library\n"
        "from tests.daemon_scripted import HashEmbedder\n"
        "memory.library.default_embedder = HashEmbedder  # no MiniLM load: this checks imports, not retrieval\n"
        "from agent.cli import app\n"
        "import agent.daemon.loop, agent.scale.session, agent.scale.driver\n"
        f"r = CliRunner().invoke(app, ['run', '--env', 'arithmetic', '-n', '2', '--model', '{SCRIPTED}', "
        f"'--no-retrieval', '--workspace', r'{tmp_path / 'ws'}'])\n"
        "assert r.exit_code == 0, r.output\n"
        "print('ray' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "False"
