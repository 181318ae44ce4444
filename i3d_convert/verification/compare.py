"""Endpoint-by-endpoint comparison of two runs against the tolerances, and the top classes of a run."""

from __future__ import annotations

from typing import List, Mapping, Optional, Sequence

import numpy as np

from i3d_convert import architecture as arch
from i3d_convert.verification.metrics import difference
from i3d_convert.verification.report import EndpointRow, TopClass
from i3d_convert.verification.tolerances import FLOAT32_FLOOR_FACTOR, FLOAT32_LOGITS_ATOL, FLOAT32_REL_L2_MIN, FLOAT64_REL_L2

#: Top classes listed for each side.
TOP_K = 5


def compare_endpoints(candidate: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray], dtype: str, *,
                      floors: Optional[Mapping[str, float]] = None, atol: Optional[float] = None,
                      rtol: Optional[float] = None) -> List[EndpointRow]:
    """One :class:`EndpointRow` per endpoint of ``arch.ENDPOINTS`` (both dicts NTHWC)."""
    rows = []
    for name in arch.ENDPOINTS:
        a, b = candidate.get(name, "PyTorch side did not compute it"), reference[name]
        floor = None if floors is None else floors[name]
        problem = a if isinstance(a, str) else (
            f"PyTorch shape {list(a.shape)} != TensorFlow {list(b.shape)}" if a.shape != b.shape else None)
        if problem is not None:
            rows.append(EndpointRow(name, list(b.shape), float("inf"), float("inf"), float("nan"), floor,
                                    float("nan"), None, False, problem))
            continue
        d = difference(a, b)
        if rtol is not None:
            allowed = rtol
        elif dtype == "float64":
            allowed = FLOAT64_REL_L2
        else:
            allowed = max(FLOAT32_FLOOR_FACTOR * float(floor), FLOAT32_REL_L2_MIN)
        allowed_abs = None
        if name == arch.LOGITS_NAME:
            allowed_abs = atol if atol is not None else (FLOAT32_LOGITS_ATOL if dtype == "float32" else None)
        ok = bool(np.isfinite(d.rel_l2) and d.rel_l2 <= allowed and (allowed_abs is None or d.max_abs <= allowed_abs))
        rows.append(EndpointRow(name, list(a.shape), d.max_abs, d.rel_l2, d.cosine, floor, allowed, allowed_abs, ok))
    return rows


def first_failure(rows: Sequence[EndpointRow]) -> Optional[str]:
    return next((r.name for r in rows if not r.passed), None)


def top_classes(logits: np.ndarray, labels: Sequence[str], k: int = TOP_K) -> List[TopClass]:
    x = np.asarray(logits, dtype=np.float64).reshape(-1)
    p = np.exp(x - x.max())
    p /= p.sum()
    order = np.argsort(-x, kind="stable")[:k]
    return [TopClass(int(i), labels[i] if i < len(labels) else f"class_{i}", float(x[i]), float(p[i])) for i in order]


__all__ = ["TOP_K", "compare_endpoints", "first_failure", "top_classes"]
