"""``python -m bench.experiments.learning``: see :mod:`bench.experiments.learning.experiment`."""

from bench.experiments.learning.experiment import main

main()
