"""Answer parsing on huge and odd model text: linear time, lone surrogates, the check time limit."""

from __future__ import annotations

import re
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from environments import Environment, Feedback, get_environment, register_environment
from environments.base import CheckTimeout, clean_text, tag_spans, time_limit

OLD = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)  # the quadratic pattern it replaces
BUILTINS = ["arithmetic", "arithmetic:answer_format=strict,untagged_credit=0.2", "countdown", "function_calling",
            "open_ended", "python_code", "reasoning_gym:leg_counting", "reasoning_gym:spiral_matrix"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["<answer>", "</answer>", "<ANSWER>", "</Answer>", "x", " ", "<", ">", "\n", "é"]), max_size=30))
def test_tag_spans_match_the_regex_semantics(pieces):
    text = "".join(pieces)
    assert tag_spans(text, "answer") == OLD.findall(text)


def _best_time(fn, text, repeat=3):
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn(text)
        best = min(best, time.perf_counter() - start)
    return best


# Inputs that made a parser super-linear: unclosed tags (the lazy-regex extraction) and a run of "!?"
# without a space (open_ended's sentence splitter backtracked over it). Each is repeated to ~64 KB / ~512 KB.
ADVERSARIAL = {"<answer>": "<answer>", "<tool_call>": "<tool_call>", "punctuation": "!?", "fences": "```",
               "digits": "1,", "braces": "{", "identifier": "a"}
SPECS = ["arithmetic", "countdown", "function_calling", "open_ended:checkable_items=5", "python_code"]


@pytest.mark.parametrize("spec", SPECS)
def test_verify_is_linear_on_adversarial_text(spec):
    """8x the text must cost well under the 64x of a quadratic parser, or stay tiny in absolute terms
    (the quadratic extraction took ~10 s at 100 KB, docs/reliability.md)."""
    env = get_environment(spec)
    task = next(t for t in env.sample(50) if spec != "open_ended:checkable_items=5"
                or any(i.get("check", {}).get("name") == "max_sentences" for i in t.reference["rubric"]))
    verify = lambda text: env.verify(task, text)  # noqa: E731
    for name, unit in ADVERSARIAL.items():
        small, big = unit * (64_000 // len(unit)), unit * (512_000 // len(unit))
        big_s = _best_time(verify, big, repeat=2)
        ratio = big_s / max(_best_time(verify, small, repeat=2), 1e-4)
        assert big_s < 0.25 or ratio < 32, f"{spec} on {name}: 8x the input took {ratio:.0f}x the time ({big_s:.2f} s)"


SURROGATES = ["\ud800", "<answer>\ud800</answer>", "<answer>1 + \udfff</answer>", "<answer>4\ud83d</answer>",
              '<tool_call>{"name": "\ud800", "arguments": {}}</tool_call>', "\ud800<answer>def f():\n    return '\udc00'</answer>"]


@pytest.mark.parametrize("spec", BUILTINS)
def test_lone_surrogates_never_crash_and_feedback_is_storable(spec):
    env = get_environment(spec)
    task = env.sample(1)[0]
    for text in SURROGATES:
        feedback = env.verify(task, text)
        feedback.model_dump_json()  # UTF-8 encodable: the episode can be recorded
        feedback.message.encode("utf-8")


def test_clean_text():
    assert clean_text("a\ud800b") == "a\ufffdb"
    assert clean_text("\ud83d\ude00") == "\U0001F600"  # a surrogate pair is the character it encodes
    assert clean_text("plain") == "plain"


@register_environment("slow_check_probe")
class SlowCheck(Environment):
    """An environment whose check never ends (our bug), to test the time limit."""

    def generate(self, rng):
        return f"Say {rng.randint(0, 10**6)}.", {}, 0.0

    def check(self, task, answer):
        try:
            while True:
                pass
        except Exception:  # noqa: BLE001 - a check that swallows everything still cannot swallow the limit
            return Feedback.correct(answer)


def test_in_process_check_is_stopped_at_its_limit():
    env = get_environment("slow_check_probe:check_timeout_s=0.3")
    start = time.monotonic()
    feedback = env.verify(env.sample(1)[0], "<answer>1</answer>")
    assert time.monotonic() - start < 5
    assert not feedback.success and "took longer than 0.3 s" in feedback.message


def test_time_limit_leaves_no_timer_behind_and_is_off_outside_the_main_thread():
    import signal

    with time_limit(5):
        pass
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert signal.getsignal(signal.SIGALRM) in (signal.SIG_DFL, None)
    ran = []
    thread = threading.Thread(target=lambda: ran.append(_in_thread()))
    thread.start()
    thread.join()
    assert ran == ["unlimited"]


def _in_thread() -> str:
    try:
        with time_limit(0.01):
            time.sleep(0.05)
    except CheckTimeout:
        return "limited"
    return "unlimited"


def test_every_env_has_a_check_time_limit_option():
    for spec in BUILTINS:
        assert get_environment(spec).config.check_timeout_s > 0
    assert get_environment("countdown:check_timeout_s=2").config.check_timeout_s == 2
