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

from . import architecture as arch
from .errors import I3DConvertError, PathLike

#: The pooled 1024-d feature: Mixed_5c averaged over time, height and width.
POOL = "pool"
#: Endpoints ``extract_features`` accepts, the CLI's choices first.
FEATURE_ENDPOINTS: Tuple[str, ...] = ("pool", "Mixed_5c", "Logits") + tuple(
    e for e in arch.ENDPOINTS if e not in ("Mixed_5c", "Logits")
)
#: How far input values may stray outside [-1, 1] (float round-off of ``x / 127.5 - 1``).
RANGE_TOLERANCE = 1e-3
#: Frames validated per step, so memory-mapped inputs are checked without loading them whole.
_VALIDATE_CHUNK_FRAMES = 64


def _tf_same_out(size: int, stride: int) -> int:
    return -(-size // stride)


def min_logits_input() -> Tuple[int, int, int]:
    """Smallest ``(T, H, W)`` for which the Logits block's ``[2, 7, 7]`` VALID pool has an output.

    Computed from the layer table: (9, 193, 193).
    """
    strides = [layer.stride for _, layer in arch.LAYERS if isinstance(layer, (arch.Conv, arch.MaxPool))]
    out = []
    for axis, need in enumerate(arch.LOGITS_POOL_KERNEL):
        n = 1
        while True:
            size = n
            for stride in strides:
                size = _tf_same_out(size, stride[axis])
            if size >= need:
                break
            n += 1
        out.append(n)
    return tuple(out)  # type: ignore[return-value]


# --------------------------------------------------------------------------- input


def validate_clips(array: np.ndarray, path: Optional[PathLike] = None,
                   in_channels: Optional[int] = None) -> np.ndarray:
    """Check a clip array and return it as ``[N, T, H, W, C]`` (a view; nothing is copied).

    Raises :class:`I3DConvertError` (naming ``path``) unless the array is
    floating point, 4-D (THWC) or 5-D (NTHWC), has 2 or 3 channels last (or
    ``in_channels``), is finite and lies in [-1, 1] (± :data:`RANGE_TOLERANCE`).
    """
    if array.dtype.kind != "f":
        hint = " (uint8 frames: scale with x / 127.5 - 1)" if array.dtype == np.uint8 else ""
        raise I3DConvertError(f"clip must be floating point in [-1, 1], got dtype {array.dtype}{hint}", path)
    if array.ndim == 4:
        array = array[None]
    if array.ndim != 5:
        raise I3DConvertError(f"clip must be NTHWC or THWC, got {array.ndim}-D shape {list(array.shape)}", path)
    channels = array.shape[-1]
    if channels not in (arch.RGB_CHANNELS, arch.FLOW_CHANNELS):
        hint = " (channels first? expected channels last: NTHWC)" if array.shape[1] in (2, 3) else ""
        raise I3DConvertError(f"clip must have 3 (RGB) or 2 (flow) channels last, got shape {list(array.shape)}{hint}", path)
    if in_channels is not None and channels != in_channels:
        raise I3DConvertError(f"clip has {channels} channels but the model takes {in_channels}", path)
    if min(array.shape) == 0:
        raise I3DConvertError(f"clip is empty: shape {list(array.shape)}", path)
    for n in range(array.shape[0]):
        for t in range(0, array.shape[1], _VALIDATE_CHUNK_FRAMES):
            chunk = np.asarray(array[n, t: t + _VALIDATE_CHUNK_FRAMES])
            if not np.isfinite(chunk).all():
                raise I3DConvertError(f"clip {n} has non-finite values (NaN or inf) in frames {t}..", path)
            low, high = float(chunk.min()), float(chunk.max())
            if low < -1 - RANGE_TOLERANCE or high > 1 + RANGE_TOLERANCE:
                raise I3DConvertError(
                    f"clip {n} has values in [{low:.4g}, {high:.4g}], outside [-1, 1] (frames {t}..); "
                    "scale pixels with x / 127.5 - 1", path)
    return array


def load_clip_array(path: PathLike, in_channels: Optional[int] = None) -> np.ndarray:
    """A validated ``[N, T, H, W, C]`` array from a ``.npy`` file (memory-mapped, not read whole)."""
    path = Path(path)
    if not path.is_file():
        raise I3DConvertError("file not found", path)
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise I3DConvertError(f"not a readable .npy array ({exc})", path) from None
    if not isinstance(array, np.ndarray):
        raise I3DConvertError("expected one array (.npy), not an archive", path)
    return validate_clips(array, path, in_channels)


def load_clips(path: PathLike, *, frames: Optional[int] = None, size: int = arch.INPUT_SIZE,
               in_channels: Optional[int] = None) -> np.ndarray:
    """``[N, T, H, W, C]`` clips from a ``.npy`` array or a video/GIF file.

    Videos go through :func:`i3d_convert.video.load_video` (``frames`` and
    ``size`` apply to them only; see docs/ecosystem.md for its exact resize,
    centre crop and scaling).
    """
    path = Path(path)
    if path.suffix.lower() == ".npy":
        return load_clip_array(path, in_channels)
    if not path.is_file():
        raise I3DConvertError("file not found", path)
    try:
        from .video import load_video
    except ImportError as exc:
        raise I3DConvertError(f"reading videos needs the [video] extra ({exc})", path) from None
    return validate_clips(np.asarray(load_video(path, frames=frames, size=size)), path, in_channels)


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
        low = min_logits_input()
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
        raise I3DConvertError(f"batch size must be at least 1, got {batch_size}")
    n_clips, n_frames, height, width, _ = clips.shape
    starts = window_starts(n_frames, window, stride)
    length = min(window, n_frames)
    check_endpoint(model, endpoint, (length, height, width), path)
    windows = [(n, s, s + length) for n in range(n_clips) for s in starts]
    model.eval()
    parameter = next(model.parameters(), None)
    dtype = parameter.dtype if parameter is not None else torch.float32
    out: Optional[np.ndarray] = None
    with torch.inference_mode():
        for first in range(0, len(windows), batch_size):
            chunk = windows[first: first + batch_size]
            batch = np.stack([np.asarray(clips[n, s:e], dtype=np.float32) for n, s, e in chunk])
            x = torch.from_numpy(batch).permute(0, 4, 1, 2, 3).to(device=device, dtype=dtype)
            y = endpoint_of(model, x, endpoint).float().cpu().numpy()
            if out is None:
                out = np.empty((len(windows),) + y.shape[1:], dtype=np.float32)
            out[first: first + len(chunk)] = y
            if progress is not None:
                progress(first + len(chunk), len(windows))
    assert out is not None
    return FeatureResult(out, endpoint, windows)


def save_features(features: np.ndarray, output: PathLike, overwrite: bool = False) -> Path:
    """Write ``features`` as ``.npy``, atomically (nothing under ``output`` until complete)."""
    from .atomic import atomic_output

    with atomic_output(output, overwrite) as tmp:
        with open(tmp, "wb") as f:  # a file object: np.save would append .npy to a path
            np.save(f, features, allow_pickle=False)
    return Path(output)


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


__all__ = [
    "FEATURE_ENDPOINTS", "POOL", "RANGE_TOLERANCE", "FeatureResult", "min_logits_input", "validate_clips",
    "load_clip_array", "load_clips", "window_starts", "endpoint_of", "check_endpoint", "extract_features",
    "save_features", "resolve_device",
]
