"""``function_calling``: APIGen-style tool calls, scored by exact match (the R3 paper's second task).

A task is a user request plus a few tool schemas (the right tool and ``num_tools - 1`` distractors);
the model answers with one call ``{"name": ..., "arguments": {...}}`` inside ``<tool_call>`` tags. It is
correct only if the tool name and every argument match the reference exactly.

Design decisions
- The catalogue (``environments/data/tools.json``) is data: each tool has a JSON-Schema ``parameters``
  object, query templates with ``{param}`` slots and ``[...]`` optional segments, and a value pool per
  slot. An optional segment (and so an optional argument) is included with
  ``include_optional_probability``; the reference holds exactly the arguments the request mentions.
- Matching: strings, booleans and enums exactly (case-sensitive); numbers by value, so ``3 == 3.0``,
  but ``"3"`` is not ``3`` and ``true`` is not ``1``. An integer parameter accepts ``3.0`` (JSON has one
  number type). Keys of the call other than ``name`` and ``arguments`` are ignored.
- Feedback names the first problem only, in this order: invalid JSON, wrong shape, unknown tool, wrong
  tool, missing argument, unexpected argument, wrong type, wrong value. It never shows an expected value.
- The question (what the model sees) includes the offered tools; the train/eval split hashes only the
  user request, so a request never appears in both splits whatever distractors it came with.

    selfevolve envs sample function_calling:num_tools=3 -n 2
"""

from __future__ import annotations

import json
import random
import re
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from .base import EnvConfig, Environment, Feedback, Split, Task, tag_spans
from .registry import register_environment

REQUEST_MARKER = "User request: "
_FENCE = re.compile(r"```(?:json)?\s*\n?(.*?)```", re.DOTALL | re.IGNORECASE)
_SEGMENT = re.compile(r"\[([^\[\]]*)\]")
_SLOT = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_MAX_SCAN = 20_000  # characters of model text searched for a bare JSON object


# ----- the catalogue -----
@cache
def load_catalogue(path: str = "") -> dict[str, Any]:
    """The tool catalogue: ``{"tools": [...], "pools": {...}}`` (the built-in one if ``path`` is empty)."""
    if path:
        text = Path(path).read_text(encoding="utf-8")
    else:
        text = files("environments").joinpath("data/tools.json").read_text(encoding="utf-8")
    catalogue = json.loads(text)
    problems = catalogue_problems(catalogue)
    if problems:
        raise ValueError(f"tool catalogue {path or 'tools.json'} is invalid:\n  " + "\n  ".join(problems))
    return catalogue


def template_slots(template: str) -> tuple[list[str], list[str]]:
    """(slots outside optional segments, slots inside them) of a query template."""
    optional = [s for seg in _SEGMENT.findall(template) for s in _SLOT.findall(seg)]
    required = _SLOT.findall(_SEGMENT.sub("", template))
    return required, optional


def catalogue_problems(catalogue: dict[str, Any]) -> list[str]:
    """Everything wrong with a catalogue, as readable lines (empty if it is fine)."""
    problems: list[str] = []
    pools = catalogue.get("pools", {})
    names = [t.get("name") for t in catalogue.get("tools", [])]
    if len(set(names)) != len(names):
        problems.append(f"duplicate tool names: {sorted({n for n in names if names.count(n) > 1})}")
    for tool in catalogue.get("tools", []):
        name, params = tool.get("name"), tool.get("parameters", {})
        props, required = params.get("properties", {}), params.get("required", [])
        where = f"tool {name!r}"
        for p in required:
            if p not in props:
                problems.append(f"{where}: required {p!r} is not a property")
        for p, schema in props.items():
            if schema.get("type") not in ("string", "integer", "number", "boolean"):
                problems.append(f"{where}: {p!r} has unsupported type {schema.get('type')!r}")
            pool = tool.get("slots", {}).get(p)
            if pool not in pools:
                problems.append(f"{where}: parameter {p!r} has no value pool")
                continue
            for value in pool_values(pools[pool]):
                if not type_matches(schema, value) or ("enum" in schema and value not in schema["enum"]):
                    problems.append(f"{where}: pool {pool!r} value {value!r} does not fit {p!r}")
        if not tool.get("templates"):
            problems.append(f"{where}: no templates")
        for template in tool.get("templates", []):
            outside, inside = template_slots(template)
            slots = outside + inside
            for s in slots:
                if s not in props:
                    problems.append(f"{where}: template slot {{{s}}} is not a parameter: {template!r}")
            if len(set(slots)) != len(slots):
                problems.append(f"{where}: a slot appears twice in {template!r}")
            for p in required:
                if p not in outside:
                    problems.append(f"{where}: required {p!r} is not always produced by {template!r}")
            for s in inside:
                if s in required:
                    problems.append(f"{where}: required {s!r} is inside an optional segment of {template!r}")
    return problems


def pool_values(pool: Any) -> list[Any]:
    """Every argument value a pool can produce (ranges are listed at their ends and step)."""
    if isinstance(pool, dict):
        lo, hi = pool["range"]
        return [lo, hi] if "decimals" in pool else list(range(lo, hi + 1, pool.get("step", 1)))
    return [v["value"] if isinstance(v, dict) else v for v in pool]


def draw(pool: Any, rng: random.Random) -> tuple[str, Any]:
    """(text shown in the request, argument value) from a pool."""
    if isinstance(pool, dict):
        lo, hi = pool["range"]
        if "decimals" in pool:
            value = round(rng.uniform(lo, hi), pool["decimals"])
            return f"{value:.{pool['decimals']}f}", value
        value = rng.randrange(lo, hi + 1, pool.get("step", 1))
        return str(value), value
    item = rng.choice(pool)
    if isinstance(item, dict):
        return item["text"], item["value"]
    return str(item), item


def type_matches(schema: dict[str, Any], value: Any) -> bool:
    """Whether ``value`` (as parsed by json) has the JSON-Schema type of ``schema``."""
    kind = schema.get("type")
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return kind == "number" or isinstance(value, int) or value.is_integer()


def _json_type(value: Any) -> str:
    for kind, names in (
        (bool, "boolean"),
        (int, "integer"),
        (float, "number"),
        (str, "string"),
        (list, "array"),
        (dict, "object"),
    ):
        if isinstance(value, kind):
            return names
    return "null"


# ----- the environment -----
class FunctionCallingConfig(EnvConfig):
    num_tools: int = Field(
        default=4, ge=1, description="Tools offered per task: the right one plus num_tools-1 distractors."
    )
    include_optional_probability: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="Chance that each optional segment (argument) of a template is used.",
    )
    catalogue: str = Field(
        default="", description="Path to a tools.json of your own; empty = the built-in catalogue."
    )

    @model_validator(mode="after")
    def _fits(self) -> FunctionCallingConfig:
        size = len(load_catalogue(self.catalogue)["tools"])
        if self.num_tools > size:
            raise ValueError(f"num_tools={self.num_tools} but the catalogue has only {size} tools")
        return self


@register_environment("function_calling")
class FunctionCalling(Environment):
    """Call the right tool with exactly the right arguments (APIGen-style exact match)."""

    config_class = FunctionCallingConfig
    system_prompt = "You are a helpful assistant that answers a request by calling one of the given tools."
    answer_instruction = (
        'Answer with exactly one tool call as a JSON object {"name": <tool name>, "arguments": {<argument>: <value>}} '
        "inside <tool_call></tool_call> tags. Include an optional argument only if the request mentions it."
    )

    @property
    def catalogue(self) -> dict[str, Any]:
        return load_catalogue(self.config.catalogue)

    def generate(self, rng: random.Random) -> tuple[str, dict[str, Any], float]:
        tools, pools = self.catalogue["tools"], self.catalogue["pools"]
        tool = rng.choice(tools)
        request, arguments = self._fill(tool, rng.choice(tool["templates"]), pools, rng)
        distractors = rng.sample([t for t in tools if t is not tool], self.config.num_tools - 1)
        offered = [tool, *distractors]
        rng.shuffle(offered)
        schemas = "\n".join(
            json.dumps({k: t[k] for k in ("name", "description", "parameters")}, ensure_ascii=False)
            for t in offered
        )
        question = f"You can call these tools:\n<tools>\n{schemas}\n</tools>\n\n{REQUEST_MARKER}{request}"
        reference = {"name": tool["name"], "arguments": arguments, "tools": [t["name"] for t in offered]}
        return question, reference, float(len(arguments) + len(distractors))

    def _fill(
        self, tool: dict[str, Any], template: str, pools: dict[str, Any], rng: random.Random
    ) -> tuple[str, dict[str, Any]]:
        """Render one request from ``template``; return it and the arguments it mentions."""
        keep = lambda m: m.group(1) if rng.random() < self.config.include_optional_probability else ""  # noqa: E731
        text = _SEGMENT.sub(keep, template)
        arguments: dict[str, Any] = {}
        used: dict[str, set[Any]] = {}
        order = {p: i for i, p in enumerate(tool["parameters"]["properties"])}

        def fill(m: re.Match[str]) -> str:
            param = m.group(1)
            pool_name = tool["slots"][param]
            seen = used.setdefault(pool_name, set())
            for _ in range(50):  # two slots of one pool (origin, destination) get different values
                shown, value = draw(pools[pool_name], rng)
                if value not in seen:
                    break
            seen.add(value)
            arguments[param] = value
            return shown

        text = _SLOT.sub(fill, text)
        return text, dict(sorted(arguments.items(), key=lambda kv: order[kv[0]]))

    def split_of(self, question: str) -> Split:
        return super().split_of(question.rpartition(REQUEST_MARKER)[2])

    # ----- answers -----
    def extract_answer(self, text: str) -> str | None:
        """The last ``<tool_call>`` span, else the last ```json fence, else the first balanced ``{...}``."""
        text = text or ""
        for spans in (lambda: tag_spans(text, "tool_call"), lambda: _FENCE.findall(text)):
            found = [s.strip() for s in spans() if s.strip()]
            if found:
                inner = _FENCE.findall(found[-1])  # a fence inside the tags
                return inner[-1].strip() if inner and inner[-1].strip() else found[-1]
        return first_json_object(text[:_MAX_SCAN])

    def missing_answer_message(self, text: str) -> str:
        if not (text or "").strip():
            return "The response was empty. " + self.answer_instruction
        return "No tool call (a JSON object) was found in the response. " + self.answer_instruction

    def check(self, task: Task, answer: str) -> Feedback:
        problem = self.first_problem(task, answer)
        return Feedback.correct(answer) if problem is None else Feedback.failure(problem, answer=answer)

    def first_problem(self, task: Task, answer: str) -> str | None:
        """What is wrong with the call ``answer``, or ``None`` if it is right."""
        try:
            call = json.loads(answer)
        except json.JSONDecodeError as e:
            return f"The tool call is not valid JSON: {e.msg} at line {e.lineno} column {e.colno} (char {e.pos})."
        except (ValueError, RecursionError) as e:  # e.g. an integer too long to convert, absurd nesting
            return f"The tool call is not valid JSON: {type(e).__name__}: {str(e)[:200]}."
        if not isinstance(call, dict):
            return f'The tool call must be a JSON object {{"name": ..., "arguments": {{...}}}}, not a JSON {_json_type(call)}.'
        for key, kind in (("name", str), ("arguments", dict)):
            if key not in call:
                return f'The tool call has no "{key}" key; it must look like {{"name": ..., "arguments": {{...}}}}.'
            if not isinstance(call[key], kind):
                want = "a string" if kind is str else "an object"
                return f'"{key}" must be {want}, not a JSON {_json_type(call[key])}.'
        ref, name, args = task.reference, call["name"], call["arguments"]
        if name not in ref["tools"]:
            return f"Unknown tool {name!r}: the available tools are {', '.join(ref['tools'])}."
        if name != ref["name"]:
            return f"{name!r} is the wrong tool for this request."
        schema = next(t for t in self.catalogue["tools"] if t["name"] == name)["parameters"]
        props, required, expected = schema["properties"], schema["required"], ref["arguments"]
        for p in [*required, *(p for p in expected if p not in required)]:
            if p not in args:
                why = "a required argument" if p in required else "an optional argument the request asks for"
                return f"Missing argument {p!r} ({why})."
        for p in args:
            if p not in props:
                return f"Unexpected argument {p!r}: {name} has no such parameter."
            if p not in expected:
                return f"Unexpected argument {p!r}: the request does not mention it, so leave it out."
        for p in expected:
            if not type_matches(props[p], args[p]):
                return f"Wrong type for argument {p!r}: expected {props[p]['type']}, got {_json_type(args[p])} {args[p]!r}."
        for p, value in expected.items():
            if args[p] != value:
                hint = (
                    " (not one of the values the schema allows)"
                    if args[p] not in props[p].get("enum", [args[p]])
                    else ""
                )
                return f"Wrong value for argument {p!r}: {args[p]!r} does not match the request{hint}."
        return None


def first_json_object(text: str) -> str | None:
    """The first balanced ``{...}`` in ``text`` (braces inside JSON strings are skipped), else ``None``.

    >>> first_json_object('Sure: {"name": "f", "arguments": {"s": "}"}} done')
    '{"name": "f", "arguments": {"s": "}"}}'
    """
    start = text.find("{")
    tries = 0
    while start != -1 and tries < 50:
        depth, in_string, escaped = 0, False, False
        for i in range(start, len(text)):
            ch = text[i]
            if in_string:
                if escaped:
                    escaped = False
                elif ch == "\\":
                    escaped = True
                elif ch == '"':
                    in_string = False
            elif ch == '"':
                in_string = True
            elif ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth == 0:
                    return text[start : i + 1]
        start, tries = text.find("{", start + 1), tries + 1
    return None
