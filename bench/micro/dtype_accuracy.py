"""Does bf16 keep outputs correct? Greedy first-try accuracy on held-out arithmetic: fp32 vs bf16 vs vLLM.

    python -m bench.micro.dtype_accuracy 48        # 48 eval tasks (seed 7), 64 new tokens; prints, writes nothing

Each engine answers the same tasks greedily; we report accuracy and how many texts equal fp32's.
Timings printed are not comparable across engines (no alternation); bench/micro/engines.py measures speed.
"""

from __future__ import annotations

import asyncio
import sys
import time

from agent.policy import SamplingParams, load_policy
from environments import get_environment

ENGINES = [("transformers-fp32", "default", {"dtype": "float32"}),
           ("transformers-bf16", "default", {"dtype": "bfloat16"}),
           ("vllm-bf16", "vllm:default", {})]


async def main(n: int) -> None:
    env = get_environment("arithmetic")
    tasks = env.sample(n, split="eval", seed=7)
    texts_of = {}
    for name, spec, opts in ENGINES:
        policy = load_policy(spec, max_batch_size=64, **opts)
        start = time.time()
        outs = await asyncio.gather(*(policy.generate([t.messages()], SamplingParams(max_tokens=64)) for t in tasks))
        texts = texts_of[name] = [o[0].text for o in outs]
        acc = sum(env.verify(t, x).success for t, x in zip(tasks, texts, strict=True)) / len(tasks)
        print(name, f"acc={acc:.3f}", f"{time.time() - start:.1f}s", flush=True)
    ref = texts_of["transformers-fp32"]
    for name, texts in texts_of.items():
        print(name, "identical to fp32:", sum(a == b for a, b in zip(texts, ref, strict=True)), "/", len(ref))


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 48))
