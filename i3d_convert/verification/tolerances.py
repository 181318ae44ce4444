"""Parity tolerances, named once; tests, ``verify`` and the docs quote these.

The figures behind them (measured on this project's 2-core CPU machines, seeded
calibrated synthetic checkpoints, 1x3x16x224x224 clips) are in docs/parity.md.
"""

#: float64 on both sides: relative L2 error of every endpoint and the logits.
#: A wrong pad, eps or pool shows up as 1e-6 or worse; round-off is ~1e-14.
FLOAT64_REL_L2 = 1e-10

#: float32: max |logit difference| allowed.
FLOAT32_LOGITS_ATOL = 1e-3

#: float32: relative L2 error allowed, as a multiple of TensorFlow's own
#: float32-vs-float64 error on the same input (the round-off floor).
FLOAT32_FLOOR_FACTOR = 3.0

#: Absolute floor on the float32 allowance, for endpoints where TF's own
#: float32-vs-float64 error happens to be tiny (early layers, ~1e-7).
FLOAT32_REL_L2_MIN = 1e-6
