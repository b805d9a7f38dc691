"""Does the agent improve itself? Accuracy of every trained version vs the compute spent, per method.

    python -m bench.experiments.learning --quick      # smoke check (minutes)
    python -m bench.experiments.learning              # the experiment; writes docs/learning.md

Modules: ``experiment`` (the rounds and the CLI; needs the model), ``results`` (presets and the results
file), ``report`` (tables, verdicts, plots, the doc; pure).
"""
