"""The registry: duplicates refused, wrong types refused, specs parsed, entry-point plug-ins discovered."""

import random
import sys
import textwrap

import pytest

import environments
from environments import (
    Environment,
    Feedback,
    get_environment,
    list_environments,
    parse_spec,
    register_environment,
)
from environments.registry import _REGISTRY


def test_builtins_listed():
    names = set(list_environments())
    assert {"arithmetic", "countdown", "function_calling", "reasoning_gym"} <= names


def test_duplicate_name_refused():
    with pytest.raises(ValueError, match="already registered"):

        @register_environment("arithmetic")
        class Other(Environment):
            def generate(self, rng):
                return "q", {}, 0

            def check(self, task, answer):
                return Feedback.correct(answer)


def test_non_environment_refused():
    with pytest.raises(TypeError):
        register_environment("not_an_env")(dict)


def test_spec_parsing():
    assert parse_spec("arithmetic:digits=2,operators=+-") == ("arithmetic", {"digits": 2, "operators": "+-"})
    assert parse_spec("reasoning_gym:leg_counting") == ("reasoning_gym", {"": "leg_counting"})
    with pytest.raises(KeyError, match="Known"):
        get_environment("no_such_env")
    with pytest.raises(ValueError, match="only key=value"):
        get_environment("arithmetic:oops")
    env = get_environment("arithmetic:digits=2")
    assert env.spec == "arithmetic:digits=2" and get_environment(env.spec).sample(3) == env.sample(3)


def test_entry_point_plugin_discovered(tmp_path, monkeypatch):
    """An installed distribution declaring the entry point is found without touching this repo."""
    pkg = tmp_path / "se_plugin_demo"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(textwrap.dedent('''
        from environments import Environment, Feedback

        class Echo(Environment):
            """Repeat a word."""

            def generate(self, rng):
                word = rng.choice(["alpha", "beta", "gamma", "delta", "omega", "sigma"]) + str(rng.randint(0, 999))
                return f"Repeat: {word}", {"word": word}, 1.0

            def check(self, task, answer):
                ok = answer == task.reference["word"]
                return Feedback.correct(answer) if ok else Feedback.failure("Not the same word.", answer)
    '''))
    dist = tmp_path / "se_plugin_demo-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: se-plugin-demo\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[selfevolve.environments]\necho_demo = se_plugin_demo:Echo\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        environments.reload_entry_points()
        assert "echo_demo" in list_environments()
        env = get_environment("echo_demo")
        task = env.sample(1, "train", seed=0)[0]
        assert env.verify(task, f"<answer>{task.reference['word']}</answer>").success
        assert not env.verify(task, "<answer>nope</answer>").success
    finally:
        _REGISTRY.pop("echo_demo", None)
        sys.modules.pop("se_plugin_demo", None)


def test_sample_rejects_bad_split_and_tiny_space():
    env = get_environment("arithmetic")
    with pytest.raises(ValueError, match="split"):
        env.sample(1, "test")  # type: ignore[arg-type]

    class Tiny(Environment):
        name = "tiny"

        def generate(self, rng: random.Random):
            return "always the same", {}, 0.0

        def check(self, task, answer):
            return Feedback.correct(answer)

    tiny = Tiny(eval_fraction=0.01)
    split = tiny.split_of("always the same")
    other = "train" if split == "eval" else "eval"
    assert len(tiny.sample(2, split)) == 2
    with pytest.raises(RuntimeError, match="too small"):
        tiny.sample(1, other)
