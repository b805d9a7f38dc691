"""Experiments: measurements that answer a question about the method; one package per experiment.

    python -m bench.experiments.learning --quick       # accuracy per method vs compute (docs/learning.md)
    python -m bench.experiments.self_reward --quick    # self-reward vs ground truth (docs/self_reward_results.md)
    python -m bench.experiments.reflection --help      # the reflection ablation (retry designs, feedback, memory)

Each package has its own CLI (``__main__``), pure modules for results, statistics and the report
(re-render a doc from its results file without the model), and the module that runs it. They collect,
train, evaluate and promote through :mod:`agent.cycle`, like the daemon and the CLI; what they share
with each other is in :mod:`bench.experiments.common`.
"""
