"""Micro-benchmarks: one speed ratio each, both sides alternating in one run (the machine is shared and noisy).

    python -m bench.micro.generate     # micro-batched transformers backend vs raw model.generate
    python -m bench.micro.memory       # experience library: ingest vs pure embedding, search latency, rebuild
    python -m bench.micro.loop         # episode graph vs raw batched generate vs the graph run sequentially
    python -m bench.micro.train        # grpo-reflection vs plain TRL GRPO, seconds per optimizer step
    python -m bench.micro.engines      # generation engines (transformers fp32/bf16, vLLM) x batch sizes
    python -m bench.micro.sandbox      # the code sandbox's cost per verification
    python -m bench.micro.serve        # selfevolve serve over HTTP vs the engine in-process
    make bench                         # all of them

Each rewrites its own ``<!-- bench:NAME -->`` section of docs/benchmarks.md (:func:`bench._report.write_section`).
"""
