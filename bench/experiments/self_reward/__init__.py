"""Self-reward vs ground truth on the embedded model, and self-reward vs verifier training at equal compute.

    python -m bench.experiments.self_reward --quick   # smoke check (minutes)
    python -m bench.experiments.self_reward           # writes docs/self_reward_results.md

Modules: ``experiment`` (the run and the CLI; needs the model), ``settings`` (presets), ``metrics``
(gap statistics, collapse detection), ``report`` (tables, findings, plot, doc), ``progress`` (display).
"""
