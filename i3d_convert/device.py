"""Where the model runs: one place that turns a device string into a ``torch.device``."""

from __future__ import annotations

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
