"""The reflection ablation: after a failed first attempt, how often does a second attempt succeed, and
how much of that is the reflection?

    python -m bench.experiments.reflection bands --specs arithmetic:digits=2 countdown:max_numbers=3 -n 64
    python -m bench.experiments.reflection run --out runs/reflection            # the study (resumable)
    python -m bench.experiments.reflection report --out runs/reflection         # docs/reflection.md again
    python -m bench.experiments.reflection planted --out runs/reflection        # example value in the prompt vs not

Design decisions
- The same failures for every arm. Per environment (at its boundary band, :data:`~.config.DEFAULT_BANDS`)
  held-out tasks get ONE sampled first attempt (temperature 0.7, no memory hints, as ``selfevolve run``
  samples); the first ``failures`` tasks whose attempt failed are the study's failures. Each arm then
  draws ``k`` second attempts for every one of them, so arms are compared failure by failure (paired).
- Arms (:mod:`.arms`), built with the graph's own prompt functions (:mod:`agent.prompts`):
  a: reflect, then retry in the same conversation (R3's design, the graph's before this study);
  b: retry in the same conversation with the feedback but no reflection;
  c: a fresh sample of the original prompt (no feedback: plain resampling, the baseline to beat);
  d: reflect + retry with memory hints (the most similar train-split successes from an experience library);
  e: reflect, then retry in one fresh turn with the question, the feedback and the reflection, without the
     failed answer's text (same reflections as a, so a vs e isolates what the retry sees).
  The ``_bare`` arms repeat a, b and e with the paper's bare feedback ("The answer is wrong.").
- A sample's success is the environment's verifier on the second attempt. Per arm: recovery rate over
  failures × samples with a 95% bootstrap CI that resamples failures (samples of one failure are not
  independent); the share of failures recovered by at least one of the k samples; and the share of R3
  groups whose reward would vary (0 < successes < k — a GRPO group with equal rewards has no gradient).
  Paired comparisons: mean per-failure difference, bootstrap CI, sign-flip permutation p-value.
- Resumable and cheap to re-report: every generation is appended to JSONL files under ``--out`` as it
  finishes; ``report`` recomputes docs/reflection.md from them alone.
"""
