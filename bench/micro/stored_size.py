"""What one episode with a huge answer costs to store, with and without ``EpisodeConfig.max_stored_chars``.

    python -m bench.micro.stored_size                 # 10 MB answer, both retry designs; JSON bytes and seconds

A fixed policy writes a 10 MB tagged answer on every solve and retry (countdown, two attempts, critique
on): the feedback loop repeats it in the critique's and the reflection's prompts (and a conversation
retry's), so uncapped the episode holds it many times. Prints a markdown table (docs/reliability.md,
"Huge answers in storage").
"""

from __future__ import annotations

import argparse
import asyncio
import time

from agent.graph import EpisodeConfig, GraphDeps
from agent.policy.base import Chat, Completion, Policy, SamplingParams, parse_model_spec
from agent.runner import run_episodes
from environments import get_environment


class HugeAnswers(Policy):
    """Every solve/retry is ``size`` characters of answer; critiques and reflections are short."""

    def __init__(self, size: int) -> None:
        self.spec = parse_model_spec("default")
        self.answer = "<answer>" + "1 + " * (size // 4) + "1</answer>"

    async def generate(self, chats: list[Chat], params: SamplingParams) -> list[Completion]:
        def text(chat: Chat) -> str:
            last = chat[-1]["content"]
            return "VERDICT: WRONG" if "VERDICT" in last else "Be shorter." if "failed" in last else self.answer

        return [Completion(text=text(c), prompt_tokens=0, completion_tokens=0) for c in chats]


def measure(size: int, design: str, limit: int) -> tuple[int, int, float]:
    env = get_environment("countdown")
    config = EpisodeConfig(retrieval=False, retry_design=design, max_stored_chars=limit)  # type: ignore[arg-type]
    start = time.perf_counter()
    [episode], _ = asyncio.run(run_episodes(env.sample(1), GraphDeps(HugeAnswers(size), env, config)))
    seconds = time.perf_counter() - start
    stored = len(episode.model_dump_json().encode())
    return stored, sum(len(a.truncated) for a in episode.attempts), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=10_000_000, help="answer length in characters")
    args = parser.parse_args()
    print("| retry design | max_stored_chars | stored episode JSON | copies of the answer | fields cut | episode s |")
    print("|---|---:|---:|---:|---:|---:|")
    for design in ("fresh", "conversation"):
        for limit in (10**9, 65_536):
            stored, cut, seconds = measure(args.size, design, limit)
            shown = "none (10^9)" if limit == 10**9 else f"{limit:,}"
            print(f"| {design} | {shown} | {stored / 1e6:.2f} MB | {stored / args.size:.1f} | {cut} | {seconds:.2f} |",
                  flush=True)


if __name__ == "__main__":
    main()
