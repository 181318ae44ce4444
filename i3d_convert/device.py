"""Where the model runs: one place that turns a device string into a ``torch.device``."""

from __future__ import annotations

import functools

import torch

from i3d_convert.errors import I3DConvertError


def resolve_device(device: str) -> torch.device:
    """``cpu`` or ``cuda[:i]``; an unavailable CUDA device is a user error, not a crash."""
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise I3DConvertError(f"unknown device {device!r}; use cpu or cuda") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise I3DConvertError("device cuda requested but CUDA is not available")
    if dev.type not in ("cpu", "cuda"):
        raise I3DConvertError(f"unsupported device {device!r}; use cpu or cuda")
    return dev


#: glibc ``mallopt`` parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


@functools.cache  # once per process: the setting is process-wide and not reversible
def reuse_freed_memory() -> bool:
    """Keep freed CPU memory in this process for the next tensors (glibc only); True if applied.

    glibc's malloc serves every block over its mmap threshold (at most 32 MiB) with a fresh
    ``mmap`` and unmaps it on free, so each forward of the model page-faults and zeroes its
    activations again: 38k faults (150 MiB) per 1x3x32x224x224 forward, ~300k (1.2 GiB) per
    8x3x16 batch, measured; TensorFlow's allocator keeps its memory and faults 0 times. This
    turns mmap off for large blocks and never trims the heap, so the memory of one forward is
    reused by the next (0 faults). The process keeps its peak memory until it exits, as
    TensorFlow does. Values are unchanged: only where tensors live. Process-wide and not
    reversible; the CLI applies it, library callers opt in. Returns False (and does nothing)
    where the C library is not glibc.
    """
    import ctypes
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # Trim first: once mmap is off, every block comes from the heap, and a heap that shrinks on
    # free would fault again.
    return mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1 and mallopt(_M_MMAP_MAX, 0) == 1
