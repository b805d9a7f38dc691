"""Episode collection on Ray: workers run episodes, the driver records each one once.

    selfevolve run --env arithmetic --episodes 64 --ray local --ray-workers 2     # a cluster in this process
    selfevolve run --env arithmetic --episodes 64 --ray auto                      # the one `ray start --head` runs
    selfevolve run --env arithmetic --ray ray://head:10001 -m openai:http://vllm:8000/v1#Qwen/Qwen2.5-1.5B-Instruct
    # the daemon: `ray = "local"` and `ray_workers = 2` in its TOML

Design decisions (docs/scale.md has the deployment picture)
- **Who records: the driver, only.** A worker (:mod:`agent.scale.worker`, a Ray actor) builds its own
  policy from the model spec and runs the same episode graph with no library (nothing is recorded there,
  ``EpisodeConfig.record`` is forced off), and returns the finished episode as JSON. The driver
  (:mod:`agent.scale.driver`) validates it and writes it to the library, so SQLite and Chroma stay on the
  driver's machine and a worker needs neither.
- **Exactly once.** The driver gives every task its episode id when it plans the task, before the first
  try; a retry reuses it. An episode is recorded only when its result reaches the driver, and an id the
  driver already recorded is ignored (counted in ``PoolStats.duplicates``); the library's insert is
  idempotent by id as a second guard. A worker that dies mid-episode (``RayActorError``, a crashed
  worker process, a lost node) is replaced and its tasks are resubmitted, up to ``max_retries`` times
  per task; a task that exhausts them is an :class:`agent.runner.EpisodeError` in the summary, never
  dropped. An episode that fails inside a live worker (the policy raised, our bug) is reported at once,
  as the in-process runner does, not retried.
- **Retrieval.** The driver holds the library: before it submits a task it looks up the hints
  (:func:`agent.nodes.find_hints`, the retrieve node's own function) and sends them with the task; the
  worker's retrieve node keeps them. Workers never open the library, so they cannot write it or rebuild
  its index, and they need no shared disk. Hints are chosen when an episode starts, as in-process.
- **A worker needs** the selfevolve package, Ray, and what its model spec needs on that node: the
  backend's packages (torch/transformers for ``default``, vllm), a local model dir or adapter at the
  same path for ``hf:``/``vllm:`` with a promoted adapter, network access to an ``openai:`` server, and
  the module of a ``python:`` plug-in or a third-party environment importable.

Nothing here imports Ray until it is used; without it, :func:`agent.scale.cluster.require_ray` names
``pip install 'selfevolve[scale]'``.
"""
