"""Difference measures between two activations (any shape, compared in float64)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Difference:
    max_abs: float
    rel_l2: float  # ||a - b|| / ||b||, b the reference
    cosine: float

    def as_dict(self) -> dict:
        return {"max_abs": self.max_abs, "rel_l2": self.rel_l2, "cosine": self.cosine}


def difference(candidate, reference) -> Difference:
    """Compare ``candidate`` against ``reference`` (same shape)."""
    a = np.asarray(candidate, dtype=np.float64).ravel()
    b = np.asarray(reference, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {np.shape(candidate)} vs {np.shape(reference)}")
    diff = a - b
    norm_b = float(np.linalg.norm(b))
    norm_a = float(np.linalg.norm(a))
    rel = float(np.linalg.norm(diff)) / norm_b if norm_b > 0 else float(np.linalg.norm(diff))
    cos = float(a @ b) / (norm_a * norm_b) if norm_a > 0 and norm_b > 0 else float(norm_a == norm_b)
    return Difference(float(np.abs(diff).max()) if diff.size else 0.0, rel, cos)


def ncthw_to_nthwc(array) -> np.ndarray:
    """PyTorch activation layout -> TensorFlow's (2-D logits pass through)."""
    array = np.asarray(array)
    return array.transpose(0, 2, 3, 4, 1) if array.ndim == 5 else array
