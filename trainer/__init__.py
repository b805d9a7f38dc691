"""Training on the experience library: datasets, rewards, one file per method on TRL, the model registry
and the evaluation gate. Entry point: :func:`trainer.train.train` (CLI: ``selfevolve train``)."""
