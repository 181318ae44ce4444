"""Network input clips from files: validated ``[N, T, H, W, C]`` float arrays in [-1, 1]."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from i3d_convert import architecture as arch
from i3d_convert.errors import I3DConvertError, PathLike

#: How far input values may stray outside [-1, 1] (float round-off of ``x / 127.5 - 1``).
RANGE_TOLERANCE = 1e-3
#: Frames validated per step, so memory-mapped inputs are checked without loading them whole.
_VALIDATE_CHUNK_FRAMES = 64


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

    Videos go through :func:`i3d_convert.io.video.load_video` (``frames`` and
    ``size`` apply to them only; see docs/ecosystem.md for its exact resize,
    centre crop and scaling).
    """
    path = Path(path)
    if path.suffix.lower() == ".npy":
        return load_clip_array(path, in_channels)
    if not path.is_file():
        raise I3DConvertError("file not found", path)
    try:
        from i3d_convert.io.video import load_video
    except ImportError as exc:
        raise I3DConvertError(f"reading videos needs the [video] extra ({exc})", path) from None
    return validate_clips(np.asarray(load_video(path, frames=frames, size=size)), path, in_channels)
