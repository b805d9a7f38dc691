"""Answer extraction on an unclosed ``<answer>`` repeated: the old lazy regex against ``tag_spans``.

    python -m bench.micro.answer_parsing                       # 1 KB / 100 KB (+ 1 MB new); seconds
    python -m bench.micro.answer_parsing --old-max 1000000     # also the old regex at 1 MB (~15 min)

The old ``re.findall(r"<answer>(.*?)</answer>", DOTALL | IGNORECASE)`` restarts its lazy scan at every
opening tag, so n unclosed tags cost O(n^2); ``environments.base.tag_spans`` stops at the first opening
tag with no closing tag after it. Also times ``verify`` of every built-in environment on the same text.
Prints a markdown table (docs/reliability.md, "Answer parsing time").
"""

from __future__ import annotations

import argparse
import re
import time

from environments import get_environment
from environments.base import tag_spans

OLD = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
SIZES = [1_000, 100_000, 1_000_000]


def seconds(fn, text: str) -> float:
    start = time.perf_counter()
    fn(text)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old-max", type=int, default=100_000, help="largest size to run the old regex on")
    args = parser.parse_args()
    envs = {spec: get_environment(spec) for spec in ["arithmetic", "countdown", "function_calling", "open_ended", "python_code"]}
    tasks = {spec: env.sample(1)[0] for spec, env in envs.items()}
    print("| text (`<answer>` x n) | old regex | `tag_spans` | " + " | ".join(f"`{s}` verify" for s in envs) + " |")
    print("|---" * (3 + len(envs)) + "|")
    for size in SIZES:
        text = "<answer>" * (size // 8)
        old = f"{seconds(OLD.findall, text):.3g} s" if size <= args.old_max else "not run"
        new = f"{seconds(lambda t: tag_spans(t, 'answer'), text) * 1000:.3g} ms"
        per_env = [f"{seconds(lambda t, s=s: envs[s].verify(tasks[s], t), text) * 1000:.3g} ms" for s in envs]
        print(f"| {size // 1000} KB | {old} | {new} | " + " | ".join(per_env) + " |", flush=True)


if __name__ == "__main__":
    main()
