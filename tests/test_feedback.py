"""Self-reward feedback sources with scripted policies: majority vote (SRT), rubric self-grading, critique."""

import doctest
import re
import sys
import textwrap
from collections.abc import Iterator

import pytest

import agent.feedback.sources as feedback_module
from agent.feedback import (
    UNRELIABLE,
    CritiqueFeedback,
    MajorityFeedback,
    MajorityOptions,
    RubricFeedback,
    RubricOptions,
    is_unreliable,
    list_feedback_sources,
    make_feedback_source,
    register_feedback_source,
    reload_entry_points,
)
from agent.feedback.registry import _REGISTRY
from agent.graph import EpisodeConfig, GraphDeps
from agent.policy.base import SamplingParams
from agent.runner import run_episodes
from environments import get_environment
from tests.scripted import ScriptedPolicy


class RecordingPolicy(ScriptedPolicy):
    """A ScriptedPolicy that also keeps the SamplingParams of every call."""

    def __init__(self, rule):
        super().__init__(rule)
        self.params: list[SamplingParams] = []

    async def generate(self, chats, params):
        self.params.append(params)
        return await super().generate(chats, params)


def replies(*texts: str):
    """A rule that returns ``texts`` in turn (the k samples of one generate call)."""
    it: Iterator[str] = iter(texts)
    return lambda node, chat: next(it)


@pytest.fixture()
def arith():
    return get_environment("arithmetic:digits=2,answer_format=strict")


@pytest.fixture()
def task(arith):
    return arith.sample(1, seed=0)[0]


def deps_for(policy, env, **config):
    return GraphDeps(policy, env, EpisodeConfig(retrieval=False, **config))


def tag(value) -> str:
    return f"<answer>{value}</answer>"


def test_doctests():
    result = doctest.testmod(feedback_module)
    assert result.attempted > 0 and result.failed == 0


# ----- majority -----


async def test_majority_agrees_drops_unparseable_and_attaches_ground_truth(arith, task):
    v = task.reference["value"]
    policy = RecordingPolicy(replies(tag(v), tag(v), "no idea", tag(f" {v}. ")))
    fb, truth = await MajorityFeedback().score(task, tag(v), deps_for(policy, arith, solve_tokens=77))
    assert fb.success and fb.reward == 1.0 and "4 of 4" in fb.message  # the unparseable sample did not vote
    assert truth is not None and truth.success
    [params] = policy.params
    assert (params.n, params.temperature, params.max_tokens) == (4, 1.0, 77)
    assert policy.batches == [1] and policy.calls[0][1] == task.messages()


async def test_majority_disagreement_keeps_label_hidden_unless_asked(arith, task):
    v, w = task.reference["value"], task.reference["value"] + 1
    rule = [tag(w), tag(w), tag(w), tag(v)]
    fb, truth = await MajorityFeedback().score(task, tag(v), deps_for(ScriptedPolicy(replies(*rule)), arith))
    assert not fb.success and fb.reward == 0.0 and not is_unreliable(fb) and fb.reliable
    assert fb.label == str(w)  # the pseudo-label rides on the feedback for the trainer, not in the message
    assert "3 of 5" in fb.message and str(w) not in fb.message
    assert truth.success  # the gap: the minority answer was the right one
    shown = MajorityFeedback(MajorityOptions(reveal_majority=True))
    fb, _ = await shown.score(task, tag(v), deps_for(ScriptedPolicy(replies(*rule)), arith))
    assert str(w) in fb.message


async def test_majority_online_filter_marks_low_agreement(arith, task):
    rule = replies(tag(1), tag(2), tag(3), tag(4))
    fb, _ = await MajorityFeedback().score(task, tag(1), deps_for(ScriptedPolicy(rule), arith))
    assert is_unreliable(fb) and not fb.reliable and fb.message.startswith(UNRELIABLE)
    assert fb.reward == 0.0 and not fb.success and "2 of 5" in fb.message
    # the field is the truth, not the message prefix
    assert is_unreliable(fb.model_copy(update={"message": "x"}))
    assert not is_unreliable(fb.model_copy(update={"reliable": True}))
    # the same votes pass a lower threshold
    lenient = MajorityFeedback(MajorityOptions(threshold=0.4))
    fb, _ = await lenient.score(task, tag(1), deps_for(ScriptedPolicy(replies(tag(1), tag(2), tag(3), tag(4))), arith))
    assert not is_unreliable(fb) and fb.success and fb.label == "1"


async def test_majority_without_an_answer_samples_nothing(arith, task):
    policy = ScriptedPolicy(lambda node, chat: tag(1))
    fb, truth = await MajorityFeedback().score(task, "I am not sure", deps_for(policy, arith))
    assert not fb.success and "No final answer" in fb.message and policy.calls == []
    assert truth is not None and not truth.success


async def test_majority_offline_labels_come_from_the_frozen_policy_once(arith, task):
    v = task.reference["value"]
    base = ScriptedPolicy(lambda node, chat: tag(v))
    live = ScriptedPolicy(lambda node, chat: pytest.fail("the current policy must not vote in offline mode"))
    source = MajorityFeedback(MajorityOptions(label_policy=base, k=3))
    deps = deps_for(live, arith)
    right, _ = await source.score(task, tag(v), deps)
    wrong, _ = await source.score(task, tag(v + 1), deps)
    assert right.success and "3 of 3" in right.message  # the attempt's own answer is not a vote
    assert not wrong.success and len(base.batches) == 1  # cached per task


def value_of(chat) -> int:
    from environments.arithmetic import _evaluate

    tokens = re.search(r"What is ([\d +*-]+)\?", chat[1]["content"]).group(1).split()
    return _evaluate([int(t) for t in tokens[::2]], tokens[1::2])


async def test_degenerate_constant_answer_fools_majority_but_not_ground_truth(arith):
    """SRT's collapse signature, planted: one constant answer earns full pseudo-reward, true accuracy 0."""
    policy = ScriptedPolicy(lambda node, chat: "VERDICT: CORRECT" if node == "critique" else tag(7))
    source = make_feedback_source("majority", arith)
    tasks = arith.sample(6, seed=2)  # two-digit sums: never 7
    episodes, summary = await run_episodes(tasks, GraphDeps(policy, arith, EpisodeConfig(retrieval=False), feedback=source))
    attempts = [a for e in episodes for a in e.attempts]
    assert len(episodes) == 6 and all(e.feedback_source == "majority" for e in episodes)
    pseudo = sum(a.feedback.reward for a in attempts) / len(attempts)
    true = sum(a.ground_truth.reward for a in attempts) / len(attempts)
    assert pseudo == 1.0 and true == 0.0 and summary.first_try_accuracy == 1.0
    assert all(not a.ground_truth.success and a.ground_truth.answer == "7" for a in attempts)


# ----- rubric -----

RUBRIC = [
    {"criterion": "Explains gravity correctly.", "points": 5},
    {"criterion": "Gives an everyday example.", "points": 3},
    {"criterion": "Uses the forbidden word 'very'.", "points": -4, "check": {"name": "contains_word", "word": "very"}},
]


@pytest.fixture()
def open_env():
    return get_environment("open_ended")


def rubric_task(env):
    return env.sample(1)[0].model_copy(update={"reference": {"rubric": RUBRIC}})


def grader(verdicts: dict[str, str]):
    """Answer each grading prompt by the criterion it names."""

    def rule(node, chat):
        criterion = re.search(r"Criterion: (.*)\n", chat[-1]["content"]).group(1)
        return verdicts[criterion]

    return rule


async def test_rubric_score_with_negative_points(open_env):
    task = rubric_task(open_env)
    verdicts = {RUBRIC[0]["criterion"]: "MET", RUBRIC[1]["criterion"]: "NOT MET", RUBRIC[2]["criterion"]: "MET."}
    policy = RecordingPolicy(grader(verdicts))
    fb, truth = await RubricFeedback().score(task, "Things fall. It is very simple.", deps_for(policy, open_env))
    assert fb.reward == pytest.approx((5 - 4) / 8) and not fb.success
    assert "[MET] (+5) Explains gravity" in fb.message and "[NOT MET] (+3)" in fb.message and "[MET] (-4)" in fb.message
    assert policy.batches == [3] and policy.params[0].temperature == 0.0  # one batched call, one chat per item
    assert "Things fall. It is very simple." in policy.calls[0][1][-1]["content"]
    # open_ended's ground truth scores only the code-checkable item: the forbidden word was used
    assert truth is not None and not truth.success and truth.reward == -1.0


async def test_rubric_success_threshold_and_unparseable_grade(open_env):
    task = rubric_task(open_env)
    verdicts = {RUBRIC[0]["criterion"]: "MET", RUBRIC[1]["criterion"]: "maybe?", RUBRIC[2]["criterion"]: "NOT MET"}
    fb, _ = await RubricFeedback().score(task, "Apples fall.", deps_for(ScriptedPolicy(grader(verdicts)), open_env))
    assert fb.reward == pytest.approx(5 / 8) and not fb.success  # below 0.7
    assert "NOT MET (no verdict)" in fb.message
    lower = RubricFeedback(RubricOptions(threshold=0.6))
    fb, _ = await lower.score(task, "Apples fall.", deps_for(ScriptedPolicy(grader(verdicts)), open_env))
    assert fb.success


async def test_rubric_samples_per_item_take_the_majority(open_env):
    task = rubric_task(open_env)
    seq = iter(["MET", "NOT MET", "MET", "NOT MET", "NOT MET", "MET", "NOT MET", "NOT MET", "junk"])
    policy = RecordingPolicy(lambda node, chat: next(seq))
    fb, _ = await RubricFeedback(RubricOptions(samples_per_item=3)).score(task, "x", deps_for(policy, open_env))
    assert policy.params[0].n == 3 and policy.params[0].temperature == 0.7
    assert fb.reward == pytest.approx(5 / 8)  # item 1 MET (2/3), item 2 NOT MET (1/3), item 3 NOT MET (0/2)


async def test_rubric_empty_response_is_feedback(open_env):
    policy = ScriptedPolicy(lambda node, chat: "MET")
    fb, truth = await RubricFeedback().score(rubric_task(open_env), "  ", deps_for(policy, open_env))
    assert not fb.success and "empty" in fb.message and policy.calls == []
    assert truth is not None and not truth.success


# ----- critique -----


@pytest.mark.parametrize(
    "said, success, fragment",
    [("VERDICT: CORRECT it adds up", True, "judged your answer correct"),
     ("VERDICT: INCORRECT I carried wrongly", False, "judged your answer incorrect"),
     ("hmm", False, "no verdict")],
)
async def test_critique_verdict_is_the_reward(arith, task, said, success, fragment):
    policy = RecordingPolicy(lambda node, chat: said)
    wrong = tag(task.reference["value"] + 1)
    fb, truth = await CritiqueFeedback().score(task, wrong, deps_for(policy, arith))
    assert fb.success is success and fragment in fb.message and fb.answer == str(task.reference["value"] + 1)
    assert not truth.success
    [(node, chat)] = policy.calls
    assert node == "critique" and chat[-2] == {"role": "assistant", "content": wrong}
    assert policy.params[0].temperature == 0.0


# ----- factory -----


def test_factory_builds_sources_and_parses_specs(arith, open_env):
    assert make_feedback_source("verifier", arith) is None
    majority = make_feedback_source("majority:k=8,threshold=0.5", arith, temperature=0.8)
    assert isinstance(majority, MajorityFeedback) and majority.name == "majority"
    assert (majority.options.k, majority.options.threshold, majority.options.temperature) == (8, 0.5, 0.8)
    assert isinstance(make_feedback_source("rubric", open_env), RubricFeedback)
    assert isinstance(make_feedback_source("critique", arith), CritiqueFeedback)


@pytest.mark.parametrize(
    "name, options, match",
    [("votes", {}, "choose one of: verifier, majority, rubric, critique"),
     ("verifier", {"k": 3}, "takes no options"),
     ("majority", {"k": 0}, "Valid options: k, temperature"),
     ("majority:kk=3", {}, "Valid options"),
     ("majority:8", {}, "key=value"),
     ("rubric", {}, "open_ended")],
)
def test_factory_errors_name_the_fix(arith, name, options, match):
    with pytest.raises(ValueError, match=match):
        make_feedback_source(name, arith, **options)


# ----- registry: a new source is one registration -----


class ParityOptions(feedback_module._Options):
    modulus: int = 2


async def test_a_source_registered_outside_the_package_runs_in_episodes(arith):
    @register_feedback_source("parity_demo")
    class ParityFeedback:
        """Success iff the answer is divisible by ``modulus`` (a toy judge)."""

        options_class = ParityOptions

        def __init__(self, options):
            self.options = options

        async def score(self, task, output, deps):
            answer = deps.environment.extract_answer(output)
            ok = answer is not None and int(answer) % self.options.modulus == 0
            return (feedback_module.Feedback.correct(answer) if ok else feedback_module.Feedback.failure("odd", answer),
                    feedback_module.ground_truth(deps.environment, task, output))

    try:
        assert "parity_demo" in list_feedback_sources()
        source = make_feedback_source("parity_demo:modulus=3", arith)
        assert source.name == "parity_demo" and source.options.modulus == 3
        with pytest.raises(ValueError, match="Valid options: modulus"):
            make_feedback_source("parity_demo:k=1", arith)
        policy = ScriptedPolicy(lambda node, chat: "<answer>9</answer>")
        episodes, _ = await run_episodes(arith.sample(2, seed=3), GraphDeps(policy, arith, EpisodeConfig(retrieval=False), None, source))
        assert all(e.feedback_source == "parity_demo" and e.first_success for e in episodes)
        assert all(e.attempts[0].ground_truth is not None for e in episodes)
        with pytest.raises(ValueError, match="already registered"):
            register_feedback_source("parity_demo")(type("Other", (ParityFeedback,), {}))
    finally:
        _REGISTRY.pop("parity_demo", None)


def test_registry_refuses_non_sources_and_reserved_names():
    with pytest.raises(TypeError, match="no score"):
        register_feedback_source("nothing_demo")(type("Nothing", (), {}))
    with pytest.raises(ValueError, match="not 'verifier'"):
        register_feedback_source("verifier")
    with pytest.raises(TypeError, match="options_class"):
        register_feedback_source("bad_opts_demo")(type("BadOpts", (), {"score": lambda self: None, "options_class": dict}))
    assert "nothing_demo" not in _REGISTRY and "bad_opts_demo" not in _REGISTRY


def test_entry_point_plugin_is_found(tmp_path, monkeypatch, arith):
    """An installed distribution declaring the entry point is found without touching this repo."""
    pkg = tmp_path / "se_feedback_demo"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(textwrap.dedent('''
        from environments import Feedback

        class AlwaysRight:
            async def score(self, task, output, deps):
                return Feedback.correct("x", "You are always right here."), None

            def __init__(self, options):
                self.options = options
    '''))
    dist = tmp_path / "se_feedback_demo-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: se-feedback-demo\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[selfevolve.feedback_sources]\nalways_demo = se_feedback_demo:AlwaysRight\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        reload_entry_points()
        source = make_feedback_source("always_demo", arith)
        assert source.name == "always_demo" and list(list_feedback_sources())[:3] == ["majority", "rubric", "critique"]
    finally:
        _REGISTRY.pop("always_demo", None)
        sys.modules.pop("se_feedback_demo", None)
