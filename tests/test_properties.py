"""Property-based checks of everything that takes text from outside: CLI arguments, the daemon's TOML,
environment specs and model answers (random unicode, huge, nested and unclosed tags).

The properties: no uncaught exception (only the documented error types), nothing nonsensical accepted,
and every error a user reads is one line naming the problem. Bounded (``max_examples``) to stay fast.
"""

from __future__ import annotations

import tomllib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from agent.cli import app
from agent.daemon.config import ConfigError, parse_config
from environments import Environment, Feedback, get_environment, register_environment

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NAMES = ["arithmetic", "countdown", "function_calling", "open_ended", "python_code", "nope", "", "arith metic"]
KEYS = ["digits", "terms", "operators", "min_numbers", "max_numbers", "eval_fraction", "feedback_detail",
        "check_timeout_s", "answer_format", "partial_credit", "levels", "x", ""]
VALUES = st.one_of(st.integers(-10**6, 10**6), st.floats(allow_nan=True), st.text(max_size=12),
                   st.sampled_from(["true", "null", "[1,2]", "{}", '"', "1e400", "-0", "=", ":", ","]))


@st.composite
def specs(draw) -> str:
    name = draw(st.sampled_from(NAMES))
    items = draw(st.lists(st.tuples(st.sampled_from(KEYS), VALUES), max_size=3))
    options = ",".join(f"{k}={v}" for k, v in items)
    tail = draw(st.sampled_from(["", ",", ":", " ", "bare"]))
    return f"{name}:{options}{tail}" if options or tail else name


@FAST
@given(st.one_of(specs(), st.text(max_size=40)))
def test_an_env_spec_builds_or_fails_with_one_line_naming_the_environment(spec):
    try:
        env = get_environment(spec)
    except (KeyError, ValueError) as e:
        message = str(e).strip("'\"")
        assert "\n" not in message, message
        assert "environment" in message
    else:
        assert get_environment(env.spec).spec == env.spec  # a built spec rebuilds the same environment


runner = CliRunner()


@FAST
@given(st.one_of(specs(), st.text(max_size=30)), st.integers(-5, 5), st.sampled_from(["train", "eval", "test", ""]))
def test_envs_sample_exits_cleanly_with_a_one_line_error(spec, n, split):
    result = runner.invoke(app, ["envs", "sample", spec, "-n", str(n), "--split", split, "--json"])
    assert result.exit_code in (0, 2), result.output
    if not isinstance(result.exception, SystemExit | None):
        raise result.exception
    if result.exit_code == 2 and result.output.startswith("error: "):  # ours (typer's usage errors are its own)
        assert result.output.count("\n") == 1, result.output
    elif result.exit_code == 2:
        assert "Invalid value" in result.output or "Usage" in result.output, result.output


def test_the_cli_error_of_a_bad_spec_is_one_line():
    result = runner.invoke(app, ["envs", "sample", "arithmetic:digits=0"])
    assert result.exit_code == 2 and result.output.startswith("error: ") and result.output.count("\n") == 1


ANSWER_PIECES = ["<answer>", "</answer>", "<ANSWER>", "<answer><answer>", "</answer></answer>", "<tool_call>",
                 "</tool_call>", "```", "{", "}", "[", '"', "(", ")", "1", "+", "*", "/", "=", "\ud800", "\udfff",
                 "\U0001F600", "\x00", "\n", " ", "é", "ٱ", "1e9999", "9" * 50, "__import__('os')"]
answers = st.one_of(st.text(max_size=200), st.lists(st.sampled_from(ANSWER_PIECES), max_size=40).map("".join),
                    st.sampled_from(ANSWER_PIECES).map(lambda p: p * 20_000))
ENVS = {spec: get_environment(spec) for spec in ["arithmetic", "countdown", "function_calling", "open_ended"]}
TASKS = {spec: env.sample(3, seed=5) for spec, env in ENVS.items()}


@pytest.mark.parametrize("spec", list(ENVS))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=answers, i=st.integers(0, 2))
def test_verify_never_raises_and_its_feedback_is_storable(spec, text, i):
    task = TASKS[spec][i]
    feedback = ENVS[spec].verify(task, text)
    feedback.model_dump_json()
    assert 0.0 <= feedback.reward <= 1.0 and feedback.message


@settings(max_examples=60, deadline=None)
@given(text=st.lists(st.sampled_from([p for p in ANSWER_PIECES if not p[:1].isdigit()] + ["x", "y"]), max_size=30).map("".join))
def test_no_text_without_the_numbers_is_a_right_answer(text):
    """Nonsense is never accepted: text made of everything but digits cannot solve arithmetic or countdown."""
    for spec in ("arithmetic", "countdown"):
        for task in TASKS[spec]:
            assert not ENVS[spec].verify(task, text.replace("1", "")).success


SECTIONS = {"": ["workspace", "model", "concurrency", "chunk", "environments", "bogus"],
            "episode": ["max_attempts", "k", "temperature", "retry_design", "max_stored_chars", "bogus"],
            "training": ["method", "min_episodes", "trainer", "bogus"], "gate": ["min_improvement", "bogus"],
            "budget": ["max_cycles", "bogus"], "curriculum": ["bogus"], "bogus": ["x"]}
TOML_VALUES = st.one_of(st.integers(-10**9, 10**9), st.floats(allow_nan=False, width=32), st.booleans(),
                        st.text(max_size=10), st.lists(st.integers(-3, 3), max_size=3),
                        st.sampled_from(["python:nope:x", "python:", "arithmetic", "countdown:min_numbers=9"]),
                        st.lists(st.fixed_dictionaries({"spec": st.sampled_from(["arithmetic", "nope", "countdown:x=1"])}),
                                 max_size=2))


@st.composite
def daemon_dicts(draw) -> dict:
    data: dict = {}
    for section in draw(st.lists(st.sampled_from(list(SECTIONS)), max_size=4, unique=True)):
        keys = draw(st.lists(st.sampled_from(SECTIONS[section]), max_size=3, unique=True))
        values = {k: draw(TOML_VALUES) for k in keys}
        if section:
            data[section] = values
        else:
            data.update(values)
    return data


@FAST
@given(daemon_dicts())
def test_a_daemon_config_validates_or_names_each_bad_key_on_its_own_line(data):
    try:
        parse_config(data, "daemon.toml")
    except ConfigError as e:
        header, *problems = str(e).splitlines()
        assert header == "invalid daemon config daemon.toml:" and problems
        assert all(line.startswith("  ") and ": " in line for line in problems), str(e)


@FAST
@given(st.text(max_size=80))
def test_random_toml_text_is_a_config_error_or_a_config(tmp_path_factory, text):
    from agent.daemon.config import load_config

    path = tmp_path_factory.mktemp("toml") / "daemon.toml"
    path.write_text(text, encoding="utf-8", errors="replace")
    try:
        tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError:
        with pytest.raises(ConfigError, match="is not valid TOML"):
            load_config(path)
        return
    try:
        load_config(path)
    except ConfigError as e:
        assert str(e).startswith("invalid daemon config")


@pytest.mark.parametrize("spec", ["arithmetic:digits=0", "countdown:min_numbers=5,max_numbers=3", "arithmetic:zz=1"])
def test_regression_invalid_env_options_are_one_line(spec):
    """Found by the spec property: a pydantic error was printed over five lines, with a docs URL."""
    with pytest.raises(ValueError) as info:
        get_environment(spec)
    name = spec.split(":")[0]
    assert "\n" not in str(info.value) and f"environment {name!r}" in str(info.value)
    assert "errors.pydantic.dev" not in str(info.value)


def test_regression_invalid_feedback_options_are_one_line():
    from agent.feedback import make_feedback_source

    with pytest.raises(ValueError) as info:
        make_feedback_source("majority:k=0", get_environment("arithmetic"))
    assert "\n" not in str(info.value) and "k: " in str(info.value)


FEEDBACK_SPECS = st.one_of(st.text(max_size=20), st.builds(
    lambda name, opts: f"{name}:{opts}" if opts else name,
    st.sampled_from(["majority", "rubric", "critique", "verifier", "nope", ""]),
    st.lists(st.tuples(st.sampled_from(["k", "threshold", "temperature", "x"]), VALUES), max_size=2).map(
        lambda items: ",".join(f"{k}={v}" for k, v in items))))


@FAST
@given(st.one_of(specs(), st.just("arithmetic")), FEEDBACK_SPECS, st.integers(-2, 12), st.sampled_from(["train", "eval", "x"]))
def test_run_refuses_bad_options_before_loading_a_model(tmp_path_factory, spec, feedback, attempts, split):
    """Only invalid combinations are run (a valid one would load the model): each is one ``error:`` line."""
    from hypothesis import assume

    from agent.feedback import make_feedback_source

    try:
        make_feedback_source(feedback, get_environment(spec))
        valid = 1 <= attempts <= 10 and split != "x"
    except (KeyError, ValueError):
        valid = False
    assume(not valid)
    ws = tmp_path_factory.mktemp("ws")
    result = runner.invoke(app, ["run", "--env", spec, "--feedback", feedback, "--max-attempts", str(attempts),
                                 "--split", split, "-n", "1", "-w", str(ws)])
    assert result.exit_code == 2, result.output
    if not isinstance(result.exception, SystemExit):
        raise result.exception
    if result.output.startswith("error: "):
        assert result.output.count("\n") == 1, result.output


@FAST
@given(st.one_of(st.text(max_size=60), daemon_dicts().map(lambda d: _toml(d))))
def test_the_daemon_cli_reports_a_bad_config_without_a_traceback(tmp_path_factory, text):
    from hypothesis import assume

    from agent.daemon.config import load_config

    path = tmp_path_factory.mktemp("cfg") / "daemon.toml"
    path.write_text(text, encoding="utf-8", errors="replace")
    try:
        load_config(path)
        assume(False)  # a valid config would start the daemon
    except ConfigError:
        pass
    result = runner.invoke(app, ["daemon", "--config", str(path), "-w", str(path.parent / "ws")])
    assert result.exit_code == 2 and result.output.startswith("error: "), result.output
    assert "Traceback" not in result.output


def _toml(data: dict) -> str:
    """A small TOML writer for the generated configs (top-level keys first, then one table per section)."""
    import json

    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, list) and v and isinstance(v[0], dict):
            return "[" + ", ".join("{" + ", ".join(f"{k} = {json.dumps(x)}" for k, x in d.items()) + "}" for d in v) + "]"
        return json.dumps(v)

    top = [f"{k} = {value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    tables = [f"[{k}]\n" + "\n".join(f"{kk} = {value(vv)}" for kk, vv in v.items()) for k, v in data.items() if isinstance(v, dict)]
    return "\n".join(top + tables) + "\n"


@register_environment("one_question_probe")
class OneQuestion(Environment):
    """A task space of one question: one split of it is empty."""

    max_draws_per_task = 5

    def generate(self, rng):
        return "What is 1?", {"answer": "1"}, 0.0

    def check(self, task, answer):
        return Feedback.correct(answer) if answer == "1" else Feedback.failure("no")


def test_regression_run_on_an_empty_split_is_a_one_line_error(tmp_path):
    """Found while writing the run property: ``envs sample`` turned the empty-split RuntimeError into an error
    line, ``run`` let it out as a traceback."""
    env = get_environment("one_question_probe")
    empty = "eval" if env.split_of("What is 1?") == "train" else "train"
    result = runner.invoke(app, ["run", "--env", "one_question_probe", "--split", empty, "-n", "1", "-w", str(tmp_path)])
    assert result.exit_code == 2 and result.output.startswith("error: ") and result.output.count("\n") == 1, result.output
    assert isinstance(result.exception, SystemExit)
