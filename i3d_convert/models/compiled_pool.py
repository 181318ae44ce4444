"""Opt-in: I3D's max pools compiled by TorchInductor, used per input shape only where they are the same
bits and faster.

PyTorch's eager CPU ``max_pool3d`` (it also computes indices) is the largest gap to TensorFlow's oneDNN
pools (docs/benchmarks.md); inductor's generated loop is 2-10x faster per pool. A maximum is exact in
any order, so the compiled pool must give the same bits: :func:`compiled_wins` checks that and times
both on the first input of each shape. Compiling needs a C++ compiler and takes seconds per shape, so
it is for long runs and never the default. Any failure to compile warns once and leaves the eager pool.
"""

from __future__ import annotations

import functools
import time
import warnings
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

#: Distinct (shape, kernel, stride) pool calls one compiled function may specialise for: I3D has 13
#: pools; a few clip shapes per run fit.
_RECOMPILE_LIMIT = 256
#: The exception that made compiling fail in this process (then every pool stays eager).
_unavailable: list = []


def _max_pool3d(x: torch.Tensor, kernel: Sequence[int], stride: Sequence[int], padding: Sequence[int]) -> torch.Tensor:
    return F.max_pool3d(x, kernel, stride, padding, ceil_mode=True)


@functools.cache
def _compiled_pool() -> Callable:
    return torch.compile(_max_pool3d, dynamic=False)


def compiled_max_pool3d(x: torch.Tensor, kernel: Sequence[int], stride: Sequence[int],
                        padding: Sequence[int]) -> torch.Tensor:
    """``F.max_pool3d(x, kernel, stride, padding, ceil_mode=True)`` through inductor (compiles per shape)."""
    import torch._dynamo

    with torch._dynamo.config.patch(recompile_limit=_RECOMPILE_LIMIT):
        return _compiled_pool()(x, tuple(kernel), tuple(stride), tuple(padding))


def _best_seconds(fn: Callable[[], torch.Tensor], repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def compiled_wins(x: torch.Tensor, kernel: Sequence[int], stride: Sequence[int], padding: Sequence[int]) -> bool:
    """Compile the pool for ``x``'s shape; True if it gives the eager pool's exact bits and is faster
    (best of 3 each). False, with one warning per process, where compiling fails."""
    if _unavailable:
        return False
    try:
        compiled = compiled_max_pool3d(x, kernel, stride, padding)
    except Exception as exc:  # no C++ compiler, unsupported platform, inductor error: stay eager
        _unavailable.append(exc)
        first_line = (str(exc).strip().splitlines() or [""])[0][:200]
        warnings.warn(f"compiled max pools unavailable, using PyTorch's eager pools ({type(exc).__name__}: {first_line})",
                      RuntimeWarning, stacklevel=3)
        return False
    eager = _max_pool3d(x, kernel, stride, padding)
    if not torch.equal(compiled, eager) or compiled.stride() != eager.stride():
        return False
    eager_s = _best_seconds(lambda: _max_pool3d(x, kernel, stride, padding))
    compiled_s = _best_seconds(lambda: compiled_max_pool3d(x, kernel, stride, padding))
    return compiled_s < eager_s


__all__ = ["compiled_max_pool3d", "compiled_wins"]
