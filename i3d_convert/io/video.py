"""Read a short RGB clip (animated GIF and other multi-frame images) as network input.

:func:`load_video` returns ``[1, T, H, W, 3]`` float32 in [-1, 1] (NTHWC,
TensorFlow's layout; :func:`to_ncthw` gives the PyTorch model's). Pixels are
mapped ``u8 / 255 * 2 - 1``: DeepMind's sample GIF
(``v_CricketShot_g04_c01_rgb.gif``) is a visualisation of the [-1, 1] input
rescaled to [0, 1], so this inverts it up to the GIF's 8-bit palette
quantisation. Decoding uses Pillow (``pip install "i3d-convert[video]"``);
every problem with the file is an :class:`~i3d_convert.errors.I3DConvertError`
naming it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

import numpy as np
import torch

from i3d_convert.errors import I3DConvertError

#: Refuse clips whose decoded frames would exceed this many bytes (uint8).
MAX_DECODED_BYTES = 4 << 30


def _open_image(path: Path):
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:  # pragma: no cover - pillow is in the [video] extra
        raise I3DConvertError('reading videos needs Pillow: pip install "i3d-convert[video]"', path) from None
    if not path.is_file():
        raise I3DConvertError("file not found", path)
    try:
        return Image.open(path)
    except UnidentifiedImageError:
        raise I3DConvertError("not an image or animation Pillow can read", path) from None
    except (OSError, ValueError) as exc:
        raise I3DConvertError(f"cannot open image ({exc})", path) from None


def _resize_and_crop(frame, size: int):
    """Shorter side to ``size`` (bilinear), then the centre ``size x size`` crop."""
    from PIL import Image

    width, height = frame.size
    if (width, height) == (size, size):
        return frame
    scale = size / min(width, height)
    new = (max(size, round(width * scale)), max(size, round(height * scale)))
    frame = frame.resize(new, Image.BILINEAR)
    left, top = (new[0] - size) // 2, (new[1] - size) // 2
    return frame.crop((left, top, left + size, top + size))


def read_frames(path: "str | os.PathLike[str]", frames: Optional[int] = None,
                size: Optional[int] = 224) -> np.ndarray:
    """The first ``frames`` frames (all when None) as ``[T, H, W, 3]`` uint8 RGB.

    With ``size`` set, frames that are not ``size x size`` are resized (shorter
    side, bilinear) and centre-cropped; frames already that size are untouched.
    """
    path = Path(path)
    if frames is not None and frames < 1:
        raise I3DConvertError(f"{{arg}} must be at least 1, got {frames}", path, argument="frames")
    if size is not None and size < 1:
        raise I3DConvertError(f"{{arg}} must be at least 1, got {size}", path, argument="size")
    image = _open_image(path)
    out: List[np.ndarray] = []
    try:
        with image:
            total = getattr(image, "n_frames", 1)
            wanted = total if frames is None else frames
            if wanted > total:
                raise I3DConvertError(f"asked for {wanted} frames but the clip has {total}", path)
            width, height = image.size
            side = size or max(width, height)
            if wanted * max(width * height, side * side) * 3 > MAX_DECODED_BYTES:
                raise I3DConvertError(f"{wanted} frames of {width}x{height} are too large to decode", path)
            for index in range(wanted):
                image.seek(index)
                frame = image.convert("RGB")
                if size is not None:
                    frame = _resize_and_crop(frame, size)
                out.append(np.asarray(frame, dtype=np.uint8))
    except I3DConvertError:
        raise
    except (OSError, ValueError, EOFError, SyntaxError) as exc:  # truncated or corrupt data
        raise I3DConvertError(f"cannot decode frame {len(out)} ({type(exc).__name__}: {exc})", path) from None
    shapes = {f.shape for f in out}
    if len(shapes) != 1:
        raise I3DConvertError(f"frames differ in size: {sorted(shapes)}; pass {{arg}}= to resize them", path,
                              argument="size")
    return np.stack(out)


def load_video(path: "str | os.PathLike[str]", frames: Optional[int] = None,
               size: Optional[int] = 224) -> np.ndarray:
    """A clip as ``[1, T, size, size, 3]`` float32 in [-1, 1] (``u8 / 255 * 2 - 1``)."""
    u8 = read_frames(path, frames, size)
    return ((u8.astype(np.float32) / np.float32(255.0)) * np.float32(2.0) - np.float32(1.0))[None]


#: DeepMind's sample clip is an animated GIF; the same reader serves it.
load_gif = load_video


def to_ncthw(clip_nthwc: np.ndarray) -> torch.Tensor:
    """``[N, T, H, W, C]`` array -> contiguous ``[N, C, T, H, W]`` tensor (the PyTorch model's layout)."""
    array = np.asarray(clip_nthwc)
    if array.ndim != 5:
        raise ValueError(f"expected [N, T, H, W, C], got shape {list(array.shape)}")
    return torch.from_numpy(np.ascontiguousarray(array.transpose(0, 4, 1, 2, 3)))


__all__ = ["load_video", "load_gif", "read_frames", "to_ncthw"]
