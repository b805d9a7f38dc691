"""``selfevolve serve``'s command line: user mistakes get one error line naming the fix, never a traceback."""

from __future__ import annotations

from typer.testing import CliRunner

from agent.cli import app


def run(*args: str, env: dict[str, str] | None = None):
    result = CliRunner().invoke(app, ["serve", *args], env={"SELFEVOLVE_API_KEY": "", **(env or {})})
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def test_a_public_address_needs_a_key(tmp_path):
    result = run("-w", str(tmp_path), "--host", "0.0.0.0")
    assert result.exit_code == 2 and "--api-key" in result.output and "Traceback" not in result.output


def test_a_bad_model_spec_is_one_line(tmp_path):
    result = run("-w", str(tmp_path), "--model", "nonsense")
    assert result.exit_code == 2 and "bad model spec 'nonsense'" in result.output
    result = run("-w", str(tmp_path), "--model", "hf:/no/such/model/dir")
    assert result.exit_code == 2 and "/no/such/model/dir" in result.output and "Traceback" not in result.output


def test_inconsistent_limits_are_refused(tmp_path):
    result = run("-w", str(tmp_path), "--max-tokens-limit", "16", "--default-max-tokens", "64")
    assert result.exit_code == 2 and "default_max_tokens (64) exceeds max_tokens_limit (16)" in result.output
