"""The episode graph: retrieve → solve → critique → verify → (reflect → retry → critique → verify)* → record.

A LangGraph ``StateGraph`` with a typed state, named nodes, one pure router and an explicit bound on
attempts (after the LangGraph reflexion tutorial). This module holds the state, the dependencies and
the wiring; each node is one function in :mod:`agent.nodes`. Each node that calls the model stores the
exact messages it sent and the text it got back as a :class:`memory.records.ModelCall`, because
training later needs the exact prompts.

Conversation shape (the trainer relies on it, see memory/records.py):

    solve  = task prompt (+ retrieved hints in the last user message)
    reflect = solve.messages + [assistant: solve.output] + [user: REFLECT(feedback)]
    retry  = [system] + [user: question + feedback + reflection + instruction]     (retry_design="fresh", default)
           | reflect.messages + [assistant: reflection] + [user: RETRY]            (retry_design="conversation")

The critique is a side conversation (solve.messages + answer + CRITIQUE); it is recorded but not fed
back, so the retry sees only what ``retry_design`` gives it. A wrong or malformed answer is data (``Feedback``) shown to
the reflect node; an exception from the policy or our code propagates to the runner.

    selfevolve run --env arithmetic --episodes 16
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypedDict

from langgraph.graph import END, START, StateGraph
from pydantic import BaseModel, ConfigDict, Field

from agent import nodes
from agent.policy.base import Policy, SamplingParams
from agent.prompts import RetryDesign
from environments import Environment, Feedback, Task
from memory.protocol import Library
from memory.records import Attempt, Episode, ModelCall, Purpose, new_id

if TYPE_CHECKING:
    from langgraph.checkpoint.base import BaseCheckpointSaver

log = logging.getLogger(__name__)


class EpisodeConfig(BaseModel):
    """What the graph does; every field is settable from the CLI and the daemon config."""

    model_config = ConfigDict(extra="forbid")

    max_attempts: int = Field(default=2, ge=1, le=10, description="1 = no retry; 2 = one reflect+retry (R3).")
    critique: bool = Field(default=True, description="Ask the model to judge its own answer (recorded, not fed back).")
    retrieval: bool = Field(default=True, description="Show similar past successes from memory as hints.")
    k: int = Field(default=2, ge=0, le=10, description="How many past successes to show.")
    min_hint_score: float = Field(default=0.3, ge=-1, le=1, description="Cosine similarity below which a hit is not shown.")
    temperature: float = Field(default=0.7, ge=0, le=2, description="Sampling temperature for solve/retry/reflect.")
    top_p: float = Field(default=0.95, gt=0, le=1)
    solve_tokens: int = Field(default=128, ge=1, description="Max new tokens of a solve or retry.")
    critique_tokens: int = Field(default=32, ge=1)
    reflect_tokens: int = Field(default=96, ge=1)
    retry_design: RetryDesign = Field(
        default="fresh",
        description="What a retry sees: fresh = a new turn with the question, feedback and reflection but not the "
        "failed answer (the default: 4.7% vs 0.4% recovery at 135M, docs/reflection.md); conversation = R3's same "
        "conversation.",
    )
    record: bool = Field(default=True, description="Write the episode to the experience library.")
    max_stored_chars: int = Field(
        default=65_536, ge=1_024,
        description="Longest text field (an output, a message, an answer) stored per attempt; longer ones are cut "
        "to their head and named in Attempt.truncated. The verdict is reached on the whole text first.",
    )

    def params(self, node: str, seed: int | None = None) -> SamplingParams:
        if node == "critique":
            return SamplingParams(max_tokens=self.critique_tokens, temperature=0.0, seed=seed)
        tokens = self.reflect_tokens if node == "reflect" else self.solve_tokens
        return SamplingParams(max_tokens=tokens, temperature=self.temperature, top_p=self.top_p, seed=seed)


class EpisodeState(TypedDict, total=False):
    episode_id: str
    run_id: str | None
    task: Task
    seed: int | None
    started_at: float
    hints: list[str]
    retrieved_ids: list[str]
    attempts: list[Attempt]
    # the attempt in progress
    solve: ModelCall | None
    critique: ModelCall | None
    verdict: bool | None
    feedback: Feedback | None
    episode: Episode | None
    purpose: Purpose
    metadata: dict[str, Any]


class FeedbackSource(Protocol):
    """Where an attempt's reward comes from. ``None`` in GraphDeps means the environment's verifier.

    Returns (feedback the agent acts on, hidden ground truth or None). Self-reward sources (majority
    vote, rubric self-grading, the critique verdict) return the verifier's verdict as ground truth
    when the environment has one, so the generation–verification gap can be measured.
    """

    name: str

    async def score(self, task: Task, output: str, deps: GraphDeps) -> tuple[Feedback, Feedback | None]: ...


@dataclass
class GraphDeps:
    policy: Policy
    environment: Environment
    config: EpisodeConfig
    library: Library | None = None  # None: no hints, nothing recorded
    feedback: FeedbackSource | None = None  # None: the environment's verifier


def _bound(node: Callable[[GraphDeps, EpisodeState], Awaitable[dict]], deps: GraphDeps):
    async def run(state: EpisodeState) -> dict:
        return await node(deps, state)

    run.__name__ = node.__name__
    return run


def build_episode_graph(deps: GraphDeps, checkpointer: BaseCheckpointSaver | None = None):
    """Compile the episode graph. ``checkpointer`` (e.g. LangGraph's SqliteSaver) makes it resumable."""
    after_answer = "critique" if deps.config.critique else "verify"
    graph = StateGraph(EpisodeState)
    for name, node in nodes.NODES.items():
        graph.add_node(name, _bound(node, deps))
    graph.add_edge(START, "retrieve")
    graph.add_edge("retrieve", "solve")
    graph.add_edge("solve", after_answer)
    graph.add_edge("retry", after_answer)
    graph.add_edge("critique", "verify")
    graph.add_conditional_edges("verify", lambda state: nodes.route_after_verify(deps.config, state),
                                {"record": "record", "reflect": "reflect"})
    graph.add_edge("reflect", "retry")
    graph.add_edge("record", END)
    return graph.compile(checkpointer=checkpointer)


def initial_state(
    task: Task,
    run_id: str | None = None,
    seed: int | None = None,
    episode_id: str | None = None,
    metadata: dict[str, Any] | None = None,
    purpose: Purpose = "train",
) -> EpisodeState:
    return EpisodeState(
        episode_id=episode_id or new_id("ep"),
        run_id=run_id,
        task=task,
        seed=seed,
        started_at=time.time(),
        hints=[],
        retrieved_ids=[],
        attempts=[],
        solve=None,
        critique=None,
        verdict=None,
        feedback=None,
        episode=None,
        purpose=purpose,
        metadata=dict(metadata or {}),
    )


def recursion_limit(config: EpisodeConfig) -> int:
    """LangGraph's ``recursion_limit`` for one episode: the most node visits it can make, plus one.

    Visits: retrieve, solve, record + per attempt (critique, verify) + per retry (reflect, retry). The
    ``+ 1``: LangGraph stops a run once its step counter (which starts before the first node) passes the
    limit, so a limit equal to the visits is one short (tests/test_graph.py checks the bound is tight)."""
    return 3 + 2 * config.max_attempts + 2 * (config.max_attempts - 1) + 1
