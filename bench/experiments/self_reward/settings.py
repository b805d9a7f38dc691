"""The self-reward experiment's fixed settings and presets (read by the experiment and its report)."""

ARITH = "arithmetic"  # lenient: ~46% base first-try; strict is ~0% at 135M (all-zero rewards)
OPEN = "open_ended"
GAP_SOURCES = (("verifier", ARITH), ("majority", ARITH), ("critique", ARITH), ("rubric", OPEN))
TRAIN_SOURCES = ("verifier", "majority")
FULL = dict(episodes=32, rounds=2, steps=4, eval_n=32, max_tokens=48)
QUICK = dict(episodes=8, rounds=1, steps=1, eval_n=8, max_tokens=48)
SEED = 0
EVAL_SEED = 1234
TEMPERATURE = 0.7
