"""function_calling: determinism, split, exact-match scoring, feedback messages, extraction, catalogue."""

from __future__ import annotations

import json

import pytest

from environments import get_environment
from environments.function_calling import REQUEST_MARKER, catalogue_problems, load_catalogue, template_slots


@pytest.fixture(scope="module")
def env():
    return get_environment("function_calling")


@pytest.fixture(scope="module")
def task(env):
    """A train task whose tool has at least two arguments, one of them a string."""
    for t in env.sample(100, "train", seed=3):
        args = t.reference["arguments"]
        if len(args) >= 2 and any(isinstance(v, str) for v in args.values()):
            return t
    raise AssertionError("no task with two arguments in 100 samples")


def call(name, arguments, wrap=True):
    text = json.dumps({"name": name, "arguments": arguments})
    return f"<tool_call>{text}</tool_call>" if wrap else text


def right(task):
    return call(task.reference["name"], task.reference["arguments"])


def request_of(t):
    return t.question.rpartition(REQUEST_MARKER)[2]


# ----- sampling -----
def test_same_seed_same_tasks_different_seed_different(env):
    a, b = env.sample(20, seed=1), env.sample(20, seed=1)
    assert [t.model_dump() for t in a] == [t.model_dump() for t in b]
    assert [t.id for t in env.sample(20, seed=2)] != [t.id for t in a]


def test_train_and_eval_requests_are_disjoint(env):
    train = {request_of(t) for t in env.sample(300, "train", seed=0)}
    evals = env.sample(200, "eval", seed=0)
    assert len(evals) == 200 and all(t.split == "eval" for t in evals)
    assert not train & {request_of(t) for t in evals}
    assert len({t.question for t in evals}) > 150  # varied enough


def test_prompt_offers_num_tools_including_the_right_one():
    env = get_environment("function_calling:num_tools=6")
    for t in env.sample(10, seed=0):
        offered = t.reference["tools"]
        assert len(offered) == len(set(offered)) == 6 and t.reference["name"] in offered
        assert all(f'"name": "{n}"' in t.prompt[-1].content for n in offered)
        assert "<tool_call>" in t.prompt[-1].content
        assert t.difficulty == len(t.reference["arguments"]) + 5


def test_optional_probability_controls_optional_arguments():
    never = get_environment("function_calling:include_optional_probability=0")
    always = get_environment("function_calling:include_optional_probability=1")
    tools = {t["name"]: t["parameters"] for t in load_catalogue()["tools"]}
    for t in never.sample(50, seed=0):
        assert set(t.reference["arguments"]) == set(tools[t.reference["name"]]["required"])
    extra = sum(
        len(t.reference["arguments"]) - len(tools[t.reference["name"]]["required"])
        for t in always.sample(50, seed=0)
    )
    assert extra > 20


def test_spec_round_trip(env):
    other = get_environment("function_calling:num_tools=2,include_optional_probability=0.3")
    assert other.spec == "function_calling:include_optional_probability=0.3,num_tools=2"
    assert get_environment(other.spec).sample(5, seed=0) == other.sample(5, seed=0)


def test_bad_options_are_a_clear_error():
    with pytest.raises(ValueError, match="num_tools"):
        get_environment("function_calling:num_tools=999")


# ----- scoring -----
def test_reference_scores_one(env):
    for t in env.sample(30, "eval", seed=5):
        fb = env.verify(t, "Let me call it.\n" + right(t))
        assert (fb.reward, fb.success) == (1.0, True), fb.message


def test_numbers_compare_by_value_and_argument_order_is_free(env):
    t = next(t for t in env.sample(200, seed=0) if t.reference["name"] == "compute_factorial")
    n = t.reference["arguments"]["n"]
    assert env.verify(t, call("compute_factorial", {"n": float(n)})).success
    reordered = dict(reversed(list(t.reference["arguments"].items())))
    assert env.verify(t, call(t.reference["name"], reordered)).success


def wrong(env, task, text):
    fb = env.verify(task, text)
    assert fb.success is False and fb.reward == 0.0
    return fb.message


def test_wrong_tool(env, task):
    other = next(n for n in task.reference["tools"] if n != task.reference["name"])
    msg = wrong(env, task, call(other, task.reference["arguments"]))
    assert "wrong tool" in msg and other in msg


def test_unknown_tool(env, task):
    assert "Unknown tool 'launch_rocket'" in wrong(env, task, call("launch_rocket", {}))


def test_missing_argument(env, task):
    args = dict(task.reference["arguments"])
    first = next(iter(args))
    del args[first]
    assert f"Missing argument {first!r}" in wrong(env, task, call(task.reference["name"], args))


def test_extra_argument(env, task):
    args = {**task.reference["arguments"], "verbose": True}
    assert "Unexpected argument 'verbose'" in wrong(env, task, call(task.reference["name"], args))


def test_unmentioned_optional_argument_is_unexpected():
    env = get_environment("function_calling:include_optional_probability=0")
    t = next(t for t in env.sample(100, seed=0) if t.reference["name"] == "get_current_weather")
    msg = wrong(env, t, call("get_current_weather", {**t.reference["arguments"], "unit": "celsius"}))
    assert "Unexpected argument 'unit'" in msg and "does not mention" in msg


def test_wrong_value_does_not_reveal_the_expected_one(env, task):
    param, value = next((p, v) for p, v in task.reference["arguments"].items() if isinstance(v, str))
    args = {**task.reference["arguments"], param: "Atlantis"}
    msg = wrong(env, task, call(task.reference["name"], args))
    assert f"Wrong value for argument {param!r}" in msg and value not in msg


def test_type_mismatch(env):
    t = next(t for t in env.sample(200, seed=0) if t.reference["name"] == "compute_factorial")
    n = t.reference["arguments"]["n"]
    msg = wrong(env, t, call("compute_factorial", {"n": str(n)}))
    assert "Wrong type for argument 'n'" in msg and "expected integer" in msg
    assert "Wrong type" in wrong(env, t, call("compute_factorial", {"n": True}))
    assert "Wrong type" in wrong(env, t, call("compute_factorial", {"n": n + 0.5}))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "<tool_call>{'name': 'x'}</tool_call>",
            "not valid JSON: Expecting property name enclosed in double quotes at line 1 column 2",
        ),
        ('<tool_call>{"name": "x", "arguments": {}</tool_call>', "not valid JSON"),
        ("<tool_call>[1, 2]</tool_call>", "must be a JSON object"),
        ('<tool_call>{"arguments": {}}</tool_call>', 'no "name" key'),
        ('<tool_call>{"name": "x"}</tool_call>', 'no "arguments" key'),
        (
            '<tool_call>{"name": "x", "arguments": "{}"}</tool_call>',
            '"arguments" must be an object, not a JSON string',
        ),
        ("<tool_call>" + "1" * 5000 + "</tool_call>", "not valid JSON"),
        ("<tool_call>" + "[" * 100_000 + "</tool_call>", "not valid JSON"),
        ("", "The response was empty"),
        ("   \n", "The response was empty"),
        ("I would call the weather tool with Paris.", "No tool call"),
        ("<tool_call></tool_call>", "No tool call"),
    ],
)
def test_malformed_answers_are_feedback_not_exceptions(env, task, text, expected):
    assert expected in wrong(env, task, text)


# ----- extraction -----
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('<tool_call>{"a": 1}</tool_call>', '{"a": 1}'),
        ('<TOOL_CALL>\n{"a": 1}\n</TOOL_CALL>', '{"a": 1}'),
        ('<tool_call>{"a": 1}</tool_call> then <tool_call>{"a": 2}</tool_call>', '{"a": 2}'),
        ('<tool_call>\n```json\n{"a": 1}\n```\n</tool_call>', '{"a": 1}'),
        ('Here:\n```json\n{"a": 1}\n```', '{"a": 1}'),
        ('```\n{"a": 1}\n```', '{"a": 1}'),
        (
            'I will call {"name": "f", "arguments": {"s": "}{"}} now. {"b": 2}',
            '{"name": "f", "arguments": {"s": "}{"}}',
        ),
        ('<tool_call>{"a": {"b": 1}}', '{"a": {"b": 1}}'),  # tag never closed: the bare object is still found
        ("{ unbalanced", None),
        ("no json here", None),
    ],
)
def test_extract_answer(env, text, expected):
    assert env.extract_answer(text) == expected


def test_bare_and_fenced_answers_score(env, task):
    bare = call(task.reference["name"], task.reference["arguments"], wrap=False)
    assert env.verify(task, f"The call is {bare}.").success
    assert env.verify(task, f"```json\n{bare}\n```").success


# ----- the catalogue -----
def test_catalogue_is_sane():
    catalogue = load_catalogue()
    assert catalogue_problems(catalogue) == []
    tools = catalogue["tools"]
    assert 30 <= len(tools) <= 40
    assert len({t["name"] for t in tools}) == len(tools)
    for tool in tools:
        props, required = tool["parameters"]["properties"], tool["parameters"]["required"]
        assert tool["description"] and required and len(tool["templates"]) >= 2, tool["name"]
        for template in tool["templates"]:
            outside, inside = template_slots(template)
            assert set(required) <= set(outside), (tool["name"], template)
            for slot in outside + inside:
                assert slot in props and tool["slots"][slot] in catalogue["pools"], (tool["name"], slot)


def test_catalogue_problems_are_reported():
    bad = {
        "tools": [
            {
                "name": "f",
                "description": "d",
                "parameters": {
                    "type": "object",
                    "properties": {"x": {"type": "integer"}},
                    "required": ["x", "y"],
                },
                "slots": {"x": "nums"},
                "templates": ["Call f[ with {x}]", "Use {z}"],
            },
            {"name": "f", "parameters": {}, "templates": ["t"]},
        ],
        "pools": {"nums": ["one"]},
    }
    text = "\n".join(catalogue_problems(bad))
    for needle in (
        "duplicate tool names",
        "'y' is not a property",
        "does not fit 'x'",
        "slot {z}",
        "inside an optional",
    ):
        assert needle in text
