"""The clip both sides of :func:`~i3d_convert.verification.verify.verify` run on."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
import torch

from i3d_convert import architecture as arch
from i3d_convert.conversion.tf_to_torch import sha256_of_files
from i3d_convert.errors import I3DConvertError, PathLike
from i3d_convert.verification.metrics import ncthw_to_nthwc
from i3d_convert.verification.options import DEFAULT_FRAMES, DEFAULT_SEED

def array_sha256(array: np.ndarray) -> str:
    """sha256 of the array's values as little-endian C-order bytes."""
    return hashlib.sha256(np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()).hexdigest()


def load_input(clip: Optional[PathLike], in_channels: int, frames: Optional[int] = None,
               seed: int = DEFAULT_SEED) -> Tuple[np.ndarray, Dict[str, Any]]:
    """The clip both sides run on, ``[1, T, H, W, C]`` float64 NTHWC in [-1, 1], and its description.

    ``clip`` None: the seeded random clip of :func:`i3d_convert.weights.synthetic.random_clip`
    (``frames`` frames, default 16, 224x224). A ``.npy`` file: an NTHWC/THWC
    float array in [-1, 1] (first clip; first ``frames`` frames if given). Any
    other file: a video/GIF read by :func:`i3d_convert.io.video.load_video`
    (resized and centre-cropped to 224, ``u8 / 255 * 2 - 1`` as DeepMind's sample).
    """
    if frames is not None and frames < 1:
        raise I3DConvertError(f"{{arg}} must be at least 1, got {frames}", argument="frames")
    if clip is None:
        from i3d_convert.weights.synthetic import random_clip

        t = DEFAULT_FRAMES if frames is None else frames
        x = random_clip((1, in_channels, t, arch.INPUT_SIZE, arch.INPUT_SIZE), seed=seed, dtype=torch.float64)
        array = ncthw_to_nthwc(x.numpy())
        info = {"source": f"seeded random clip (i3d_convert.weights.synthetic.random_clip, seed {seed})"}
    else:
        from i3d_convert.io.clips import load_clips

        path = Path(clip)
        array = load_clips(path, frames=frames, in_channels=in_channels)[:1]
        if frames is not None:
            if array.shape[1] < frames:
                raise I3DConvertError(f"asked for {frames} frames but the clip has {array.shape[1]}", path)
            array = array[:, :frames]
        array = np.asarray(array, dtype=np.float64)
        info = {"source": str(path), "file_sha256": sha256_of_files([path])}
    info["shape_nthwc"] = list(array.shape)
    return np.ascontiguousarray(array), info


def check_logits_input(shape: Sequence[int], source: str) -> None:
    """Raise unless an NTHWC clip of ``shape`` reaches the Logits (224x224, at least ``min_logits_input()`` frames)."""
    t, _, _ = arch.min_logits_input()
    if shape[1] < t or shape[2] != arch.INPUT_SIZE or shape[3] != arch.INPUT_SIZE:
        raise I3DConvertError(
            f"verify compares every endpoint up to the Logits, which (as in DeepMind's network) need "
            f"{arch.INPUT_SIZE}x{arch.INPUT_SIZE} frames and at least {t} of them; the clip is "
            f"{shape[1]}x{shape[2]}x{shape[3]} (T x H x W)", source)


__all__ = ["array_sha256", "check_logits_input", "load_input"]
