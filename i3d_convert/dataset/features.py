"""Sliding-window feature extraction with :class:`InceptionI3d` (what FVD-style metrics consume).

Input clips are channels-last float arrays in [-1, 1]: ``[N, T, H, W, C]``
(or one clip ``[T, H, W, C]``), C = 3 for RGB, 2 for flow. Each clip is cut
into windows of ``window`` frames every ``stride`` frames (a clip shorter than
``window`` is one shorter window; trailing frames that do not fill a window are
not used). Windows are run in batches; the output has one row per window, clip
by clip, in time order:

* ``pool``: ``[rows, 1024]``, Mixed_5c averaged over time and space
  (:meth:`InceptionI3d.forward_pooled`);
* ``Logits``: ``[rows, num_classes]`` (400 for Kinetics-400), the pre-softmax
  output -- what FVD (Unterthiner et al. 2018) takes from TF-Hub's
  ``i3d-kinetics-400``; needs windows of at least 9 frames of at least 193x193;
* ``Mixed_5c`` or any other endpoint: the activation per window, NCTHW without
  the batch axis, e.g. ``[rows, 1024, ceil(T/8), ceil(H/32), ceil(W/32)]``.

Each window is computed independently, so a row equals the endpoint of that
window run alone (up to float round-off between batch sizes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch

from i3d_convert import architecture as arch
from i3d_convert.errors import I3DConvertError, PathLike
from i3d_convert.io.clips import validate_clips

#: The pooled 1024-d feature: Mixed_5c averaged over time, height and width.
POOL = "pool"
#: Endpoints ``extract_features`` accepts, the CLI's choices first.
FEATURE_ENDPOINTS: Tuple[str, ...] = ("pool", "Mixed_5c", "Logits") + tuple(
    e for e in arch.ENDPOINTS if e not in ("Mixed_5c", "Logits")
)


# --------------------------------------------------------------------------- input


# --------------------------------------------------------------------------- windows and inference


def window_starts(num_frames: int, window: int, stride: int) -> List[int]:
    """Start frames of the windows over a clip of ``num_frames`` frames.

    ``[0, stride, 2*stride, ...]`` while a whole window fits; a clip no longer
    than ``window`` gives the single window ``[0]`` (of ``num_frames`` frames).
    """
    if window < 1 or stride < 1:
        raise I3DConvertError(f"window and stride must be at least 1 frame, got window={window}, stride={stride}")
    if num_frames <= window:
        return [0]
    return list(range(0, num_frames - window + 1, stride))


@dataclass
class FeatureResult:
    """Features, one row per window, and where each window came from."""

    features: np.ndarray
    endpoint: str
    #: ``(clip, start, stop)`` frame range of each row.
    windows: List[Tuple[int, int, int]] = field(default_factory=list)


def endpoint_of(model: torch.nn.Module, batch: torch.Tensor, endpoint: str) -> torch.Tensor:
    """The ``endpoint`` activation of ``model`` on an NCTHW batch (``pool`` = Mixed_5c mean)."""
    if endpoint == POOL:
        return model.forward_pooled(batch)
    return model.forward_endpoints(batch, [endpoint])[endpoint]


def check_endpoint(model: torch.nn.Module, endpoint: str, window_shape: Sequence[int],
                   path: Optional[PathLike] = None) -> None:
    """Fail before any work if ``model`` cannot produce ``endpoint`` for windows of ``(T, H, W)``."""
    if endpoint not in FEATURE_ENDPOINTS:
        raise I3DConvertError(f"unknown endpoint {endpoint!r}; choose one of {', '.join(FEATURE_ENDPOINTS)}")
    needed = "Mixed_5c" if endpoint == POOL else endpoint
    if needed not in model.endpoint_names:
        raise I3DConvertError(f"this model stops at {model.final_endpoint}, so it has no {endpoint} endpoint")
    if endpoint == arch.LOGITS_NAME:
        low = arch.min_logits_input()
        if any(n < m for n, m in zip(window_shape, low)):
            raise I3DConvertError(
                f"Logits need windows of at least {low[0]} frames of {low[1]}x{low[2]} pixels; "
                f"windows here are {window_shape[0]} frames of {window_shape[1]}x{window_shape[2]}", path)


def extract_features(
    model: torch.nn.Module,
    clips: np.ndarray,
    *,
    endpoint: str = POOL,
    window: int = 64,
    stride: Optional[int] = None,
    batch_size: int = 4,
    device: "str | torch.device" = "cpu",
    progress: Optional[Callable[[int, int], None]] = None,
    path: Optional[PathLike] = None,
) -> FeatureResult:
    """Run ``model`` over sliding windows of ``clips`` (``[N, T, H, W, C]`` or ``[T, H, W, C]`` in [-1, 1]).

    ``stride`` defaults to ``window`` (no overlap). ``progress(done, total)``
    is called after each batch with counts of windows. The model is used in
    eval mode under ``torch.inference_mode``; features are float32 on the CPU.
    """
    clips = validate_clips(clips, path, getattr(model, "in_channels", None))
    stride = window if stride is None else stride
    if batch_size < 1:
        raise I3DConvertError(f"batch_size must be at least 1, got {batch_size}")
    n_clips, n_frames, height, width, _ = clips.shape
    if n_frames < window:  # never shrink the window silently: the rows would not be what was asked for
        smallest = arch.MIN_LOGITS_FRAMES if endpoint == arch.LOGITS_NAME else 1
        raise I3DConvertError(f"the clip has {n_frames} frames, fewer than the window of {window}; use a window "
                              f"of {smallest} to {n_frames} frames ({endpoint} needs at least {smallest})", path)
    starts = window_starts(n_frames, window, stride)
    length = min(window, n_frames)
    check_endpoint(model, endpoint, (length, height, width), path)
    windows = [(n, s, s + length) for n in range(n_clips) for s in starts]
    out: Optional[np.ndarray] = None
    for first in range(0, len(windows), batch_size):
        chunk = windows[first: first + batch_size]
        batch = np.stack([np.asarray(clips[n, s:e], dtype=np.float32) for n, s, e in chunk])
        y = run_batch(model, batch, endpoint, device)
        if out is None:
            out = np.empty((len(windows),) + y.shape[1:], dtype=np.float32)
        out[first: first + len(chunk)] = y
        if progress is not None:
            progress(first + len(chunk), len(windows))
    assert out is not None
    return FeatureResult(out, endpoint, windows)


def run_batch(model: torch.nn.Module, batch: np.ndarray, endpoint: str, device: "str | torch.device") -> np.ndarray:
    """``endpoint`` of ``model`` (eval mode, ``torch.inference_mode``) on float32 ``[B, T, H, W, C]``
    windows: float32 ``[B, ...]`` on the CPU. The one place windows meet the model, so every caller
    batching the same windows gets the same bits."""
    model.eval()
    parameter = next(model.parameters(), None)
    dtype = parameter.dtype if parameter is not None else torch.float32
    with torch.inference_mode():
        x = torch.from_numpy(batch).permute(0, 4, 1, 2, 3).to(device=device, dtype=dtype)
        return endpoint_of(model, x, endpoint).float().cpu().numpy()


def save_features(features: np.ndarray, output: PathLike, overwrite: bool = False) -> Path:
    """Write ``features`` as ``.npy``, atomically (nothing under ``output`` until complete)."""
    from i3d_convert.io.atomic import atomic_output

    with atomic_output(output, overwrite) as tmp:
        with open(tmp, "wb") as f:  # a file object: np.save would append .npy to a path
            np.save(f, features, allow_pickle=False)
    return Path(output)


__all__ = [
    "FEATURE_ENDPOINTS", "POOL", "FeatureResult", "window_starts", "endpoint_of", "check_endpoint",
    "extract_features", "run_batch", "save_features",
]
