"""Experiments: does the agent improve itself, and at what cost? One package per experiment.

    python -m bench.experiments.learning --quick       # accuracy per method vs compute (docs/learning.md)
    python -m bench.experiments.self_reward --quick    # self-reward vs ground truth (docs/self_reward_results.md)

Each package has an ``experiment`` module (the run and its CLI, which needs the model), pure ``results`` /
``metrics`` / ``report`` modules (re-render a doc from its results file with ``--report-only``), and a
``__main__``. They collect, train, evaluate and promote through :mod:`agent.cycle`, like the daemon and
the CLI; what they share with each other is in :mod:`bench.experiments.common`.
"""
