"""A bad environment option is one line naming the env, the option, what it got and what it allows."""

from __future__ import annotations

import pytest

from environments import get_environment


@pytest.mark.parametrize(
    ("spec", "needles"),
    [
        ("arithmetic:digits=0", ["'arithmetic'", "digits=0", ">= 1", "<= 6", "default 1"]),
        ("arithmetic:digits=abc", ["digits='abc'", "int"]),
        ("arithmetic:answer_format=loose", ["answer_format='loose'", "one of 'lenient', 'strict'"]),
        ("arithmetic:digts=2", ["unknown option 'digts'", "Valid options:", "digits"]),
        ("countdown:check_timeout_s=-1", ["'countdown'", "check_timeout_s=-1", "> 0"]),
    ],
)
def test_option_error_is_one_line_naming_option_allowed_values_and_env(spec, needles):
    with pytest.raises(ValueError) as e:
        get_environment(spec)
    msg = str(e.value)
    assert "\n" not in msg and "errors.pydantic.dev" not in msg
    for needle in needles:
        assert needle in msg, (needle, msg)


def test_cli_env_option_error_is_one_line_and_exits_2():
    from typer.testing import CliRunner

    from agent.cli import app

    r = CliRunner().invoke(app, ["envs", "sample", "arithmetic:digits=0"])
    assert r.exit_code == 2 and "Traceback" not in r.output and "errors.pydantic.dev" not in r.output
    assert "digits=0" in r.output
