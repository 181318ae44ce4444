"""Spatial crops of a resized frame: ``center``, ``five`` (corners + centre) and ``ten`` (+ their mirrors).

Geometry: torchvision's ``transforms.FiveCrop``/``TenCrop`` (``functional.five_crop``), which the
anomaly-detection I3D extractors use: corners at ``(0, 0)``, ``(0, W-s)``, ``(H-s, 0)``,
``(H-s, W-s)`` (top, left) of the resized frame, and the centre. Two deliberate differences, both
so that crop 0 is the package's ``--crops center`` crop bit for bit:

* order: crop 0 is the centre, then top-left, top-right, bottom-left, bottom-right (torchvision:
  the four corners, then the centre); crops 5..9 are the horizontal mirrors of crops 0..4
  (torchvision's second five are crops of the mirrored frame, the same images in the order
  mirror(centre) last: see :data:`TORCHVISION_TEN_CROP_ORDER`);
* the centre's offset is ``(H-s)//2, (W-s)//2`` (DeepMind recipe here), where torchvision rounds
  ``(H-s)/2`` half to even: the same unless ``(W-s)/2`` ends in .5 with an odd integer part
  (e.g. a 16:9 frame resized to 455x256: offset 115 here, 116 in torchvision).

Flow mirrored: the field is mirrored and its x channel (0) negated (content moving right moves
left in the mirror).
"""

from __future__ import annotations

from typing import List, Tuple

import numpy as np

from i3d_convert.errors import I3DConvertError

CROPS = ("center", "five", "ten")
#: Where each of torchvision's ``TenCrop`` outputs is in this module's order
#: (torchvision: tl, tr, bl, br, centre, then the same five crops of the mirrored frame).
TORCHVISION_TEN_CROP_ORDER = (1, 2, 3, 4, 0, 7, 6, 9, 8, 5)


def crop_count(crops: str) -> int:
    """Crops per window: 1, 5 or 10."""
    if crops not in CROPS:
        raise I3DConvertError(f"crops must be one of {', '.join(CROPS)}, got {crops!r}")
    return {"center": 1, "five": 5, "ten": 10}[crops]


def base_crop_count(crops: str) -> int:
    """Crops cut from the frame (mirrors are made from these): 1 for ``center``, else 5."""
    return 1 if crop_count(crops) == 1 else 5


def crop_offsets(height: int, width: int, size: int) -> List[Tuple[int, int]]:
    """``(top, left)`` of the centre, top-left, top-right, bottom-left and bottom-right crops."""
    if size > height or size > width:
        raise I3DConvertError(f"crop {size} is larger than the resized frame {width}x{height}")
    bottom, right = height - size, width - size
    return [(bottom // 2, right // 2), (0, 0), (0, right), (bottom, 0), (bottom, right)]


def cut_crops(frame: np.ndarray, size: int, count: int) -> np.ndarray:
    """The first ``count`` (1 or 5) crops of one ``[H, W, C]`` frame: ``[count, size, size, C]``."""
    boxes = crop_offsets(frame.shape[0], frame.shape[1], size)[:count]
    return np.stack([frame[top: top + size, left: left + size] for top, left in boxes])


def mirrored(windows: np.ndarray, flow: bool) -> np.ndarray:
    """Horizontal mirror of ``[..., H, W, C]`` windows; flow's x channel negated."""
    out = np.ascontiguousarray(windows[..., ::-1, :])
    if flow:
        out[..., 0] = -out[..., 0]
    return out
