"""``python -m bench.experiments.self_reward``: see :mod:`bench.experiments.self_reward.experiment`."""

from bench.experiments.self_reward.experiment import main

main()
