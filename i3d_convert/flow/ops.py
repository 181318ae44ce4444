"""OpenCV-exact image operations in batched PyTorch, the building blocks of the TV-L1 port.

Every function takes float32 tensors ``[B, H, W]`` (one image per batch entry) on any
device and returns float32 on the same device. Each reproduces one OpenCV routine used by
opencv_contrib ``modules/optflow/src/tvl1flow.cpp``; tests/test_tvl1_torch.py checks each
against the OpenCV function itself (``cv2.resize``, ``cv2.remap``, ``cv2.medianBlur``) or,
for the finite differences that are private to tvl1flow.cpp, against the stencils spelled out
in docs/features.md.
"""

from __future__ import annotations

import functools
from typing import Tuple

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "INTER_TAB_SIZE",
    "pyramid_size",
    "resize_linear",
    "remap_cubic",
    "median_blur",
    "centered_gradient",
    "forward_gradient",
    "divergence",
]

#: OpenCV's sub-pixel resolution of remap: coordinates are rounded to 1/32 pixel
#: (``INTER_BITS = 5``, ``INTER_TAB_SIZE = 1 << INTER_BITS``, imgproc/src/imgwarp.cpp).
INTER_BITS = 5
INTER_TAB_SIZE = 1 << INTER_BITS


def pyramid_size(height: int, width: int, scale: float) -> Tuple[int, int]:
    """Size of ``cv2.resize(src, None, fx=scale, fy=scale)``: each side ``round(side * scale)``."""
    # OpenCV: dsize = Size(saturate_cast<int>(ssize.width * inv_scale_x), ...), i.e. cvRound.
    return int(np.rint(height * scale)), int(np.rint(width * scale))


def _linear_taps(src_len: int, dst_len: int, inv_scale: float) -> Tuple[np.ndarray, np.ndarray]:
    """Source index and weight of the first tap of ``resize`` INTER_LINEAR along one axis.

    Follows cv::resize's coefficient setup (imgproc/src/resize.cpp, ``resize``/``resizeGeneric_``):
    ``f = (float)((d + 0.5) * scale - 0.5)`` in double then float, ``s = floor(f)``, weight of the
    second tap ``f - s`` in float, clamped to the edge sample (weight 0) outside the image.
    """
    scale = 1.0 / inv_scale
    f = ((np.arange(dst_len, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    s = np.floor(f).astype(np.int64)
    frac = (f - s.astype(np.float32)).astype(np.float32)
    low = s < 0
    frac[low], s[low] = 0.0, 0
    high = s >= src_len - 1
    frac[high], s[high] = 0.0, src_len - 1
    return s, frac


def resize_linear(src: torch.Tensor, height: int, width: int,
                  inv_scale_y: float | None = None, inv_scale_x: float | None = None) -> torch.Tensor:
    """``cv2.resize(src, (width, height), fx, fy, INTER_LINEAR)`` for float32 images.

    Args:
        src: float32 ``[B, H, W]``.
        height, width: output size.
        inv_scale_y, inv_scale_x: OpenCV's ``fy``/``fx`` when the call gives a scale factor
            (``dsize = Size()``); ``None`` when it gives the size (scale = out / in).

    Returns:
        float32 ``[B, height, width]``: horizontal pass, then vertical, each
        ``a0 * s0 + a1 * s1`` in float32 as OpenCV's ``HResizeLinear``/``VResizeLinear``.
    """
    _, h, w = src.shape
    sx, ax = _linear_taps(w, width, inv_scale_x if inv_scale_x is not None else width / w)
    sy, ay = _linear_taps(h, height, inv_scale_y if inv_scale_y is not None else height / h)
    dev = src.device
    sx0 = torch.from_numpy(sx).to(dev)
    sx1 = torch.from_numpy(np.minimum(sx + 1, w - 1)).to(dev)
    ax1 = torch.from_numpy(ax).to(dev)
    ax0 = 1.0 - ax1
    rows = src[:, :, sx0] * ax0 + src[:, :, sx1] * ax1
    sy0 = torch.from_numpy(sy).to(dev)
    sy1 = torch.from_numpy(np.minimum(sy + 1, h - 1)).to(dev)
    ay1 = torch.from_numpy(ay).to(dev)[:, None]
    ay0 = 1.0 - ay1
    return rows[:, sy0, :] * ay0 + rows[:, sy1, :] * ay1


@functools.lru_cache(maxsize=None)
def _cubic_table() -> np.ndarray:
    """OpenCV's float bicubic weights, ``[INTER_TAB_SIZE, 4]`` (imgwarp.cpp ``interpolateCubic``, A = -0.75).

    Row ``k`` holds the four taps for the sub-pixel offset ``k / 32``, computed in float32
    in OpenCV's operation order; the 2-D weight is ``wy[k1] * wx[k2]`` (``initInterTab2D``).
    """
    f32 = np.float32
    a = f32(-0.75)
    x = np.arange(INTER_TAB_SIZE, dtype=np.float32) * (f32(1.0) / f32(INTER_TAB_SIZE))
    x1 = x + f32(1)
    c0 = ((a * x1 - f32(5) * a) * x1 + f32(8) * a) * x1 - f32(4) * a
    c1 = ((a + f32(2)) * x - (a + f32(3))) * x * x + f32(1)
    y = f32(1) - x
    c2 = ((a + f32(2)) * y - (a + f32(3))) * y * y + f32(1)
    c3 = f32(1) - c0 - c1 - c2
    return np.stack([c0, c1, c2, c3], axis=1).astype(np.float32)


def remap_cubic(src: torch.Tensor, map_x: torch.Tensor, map_y: torch.Tensor,
                border: str = "constant", subpixel: str = "float") -> torch.Tensor:
    """``cv2.remap(src, map_x, map_y, INTER_CUBIC, borderMode)`` for float32 images.

    OpenCV's bicubic kernel has A = -0.75 (imgwarp.cpp ``interpolateCubic``). How the sub-pixel
    position enters depends on the OpenCV version, both are offered:

    * ``subpixel="float"``: the offset ``x - floor(x)`` as a float, as measured on OpenCV 5.1 with
      float maps (its remap kernels no longer round float maps to a table);
    * ``subpixel="table"``: OpenCV's fixed-point path (``cvRound(map * INTER_TAB_SIZE)``, offset
      index ``0..31``, weights from the float 32-entry table of ``initInterTab2D``), which OpenCV
      uses for fixed-point maps (``cv2.convertMaps``) and, up to 4.10, for float maps too.

    Samples outside the image are 0 (``border="constant"``, remap's default ``borderValue = 0``)
    or the nearest edge sample (``"replicate"``).

    Args:
        src: float32 ``[B, H, W]``.
        map_x, map_y: float32 ``[B, H2, W2]`` absolute source coordinates (x = column).

    Returns:
        float32 ``[B, H2, W2]``.
    """
    if border not in ("constant", "replicate"):
        raise ValueError(f"border must be 'constant' or 'replicate', got {border!r}")
    if subpixel == "table":
        limit = 32767 * INTER_TAB_SIZE  # OpenCV keeps the integer part in a short
        ix = torch.round(map_x * INTER_TAB_SIZE).clamp(-limit, limit).to(torch.int64)
        iy = torch.round(map_y * INTER_TAB_SIZE).clamp(-limit, limit).to(torch.int64)
        x0 = torch.div(ix, INTER_TAB_SIZE, rounding_mode="floor") - 1
        y0 = torch.div(iy, INTER_TAB_SIZE, rounding_mode="floor") - 1
        table = torch.from_numpy(_cubic_table()).to(src.device)
        wx, wy = table[ix & (INTER_TAB_SIZE - 1)], table[iy & (INTER_TAB_SIZE - 1)]
    elif subpixel == "float":
        fx, fy = torch.floor(map_x), torch.floor(map_y)
        wx, wy = _cubic_taps(map_x - fx), _cubic_taps(map_y - fy)
        big = 1 << 30
        x0 = fx.clamp(-big, big).to(torch.int64) - 1
        y0 = fy.clamp(-big, big).to(torch.int64) - 1
    else:
        raise ValueError(f"subpixel must be 'float' or 'table', got {subpixel!r}")
    return _weighted_4x4(src, x0, y0, wx, wy, border)


def _cubic_taps(x: torch.Tensor) -> torch.Tensor:
    """The four bicubic taps ``[..., 4]`` for offsets ``x`` in [0, 1), float32, OpenCV's formulas."""
    a = -0.75
    x1 = x + 1.0
    c0 = ((a * x1 - 5.0 * a) * x1 + 8.0 * a) * x1 - 4.0 * a
    c1 = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    y = 1.0 - x
    c2 = ((a + 2.0) * y - (a + 3.0)) * y * y + 1.0
    c3 = 1.0 - c0 - c1 - c2
    return torch.stack([c0, c1, c2, c3], dim=-1)


def _weighted_4x4(src: torch.Tensor, x0: torch.Tensor, y0: torch.Tensor,
                  wx: torch.Tensor, wy: torch.Tensor, border: str) -> torch.Tensor:
    """``sum_r sum_c src[y0 + r, x0 + c] * wy[r] * wx[c]`` with OpenCV's row-by-row summation."""
    b, h, w = src.shape
    flat = src.reshape(b, h * w)
    out = None
    for r in range(4):
        yr = y0 + r
        y_in = (yr >= 0) & (yr < h)
        row_idx = yr.clamp(0, h - 1) * w
        row = None
        for c in range(4):
            xc = x0 + c
            idx = row_idx + xc.clamp(0, w - 1)
            val = flat.gather(1, idx.reshape(b, -1)).reshape(idx.shape)
            if border == "constant":
                val = val * (y_in & (xc >= 0) & (xc < w))
            term = val * (wy[..., r] * wx[..., c])
            row = term if row is None else row + term
        out = row if out is None else out + row
    return out


def median_blur(src: torch.Tensor, ksize: int) -> torch.Tensor:
    """``cv2.medianBlur(src, ksize)`` for float32 (ksize 3 or 5, as OpenCV allows): median of the
    ``ksize x ksize`` window with replicated borders."""
    if ksize not in (3, 5):
        raise ValueError(f"float median filter supports ksize 3 or 5 (as OpenCV), got {ksize}")
    r = ksize // 2
    padded = F.pad(src[:, None], (r, r, r, r), mode="replicate")[:, 0]
    _, h, w = src.shape
    windows = torch.stack([padded[:, i:i + h, j:j + w] for i in range(ksize) for j in range(ksize)], dim=0)
    return windows.median(dim=0).values


def centered_gradient(src: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """tvl1flow.cpp ``centeredGradient``: ``0.5 * (s[x+1] - s[x-1])`` inside, ``0.5 * (s[1] - s[0])``
    and ``0.5 * (s[n-1] - s[n-2])`` on the borders (the same as replicating the edge)."""
    px = torch.cat([src[:, :, :1], src, src[:, :, -1:]], dim=2)
    py = torch.cat([src[:, :1], src, src[:, -1:]], dim=1)
    dx = 0.5 * (px[:, :, 2:] - px[:, :, :-2])
    dy = 0.5 * (py[:, 2:] - py[:, :-2])
    return dx, dy


def forward_gradient(src: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """tvl1flow.cpp ``forwardGradient``: ``s[x+1] - s[x]``, 0 on the last column / row."""
    dx = F.pad(torch.diff(src, dim=2), (0, 1))
    dy = F.pad(torch.diff(src, dim=1), (0, 0, 0, 1))
    return dx, dy


def divergence(v1: torch.Tensor, v2: torch.Tensor) -> torch.Tensor:
    """tvl1flow.cpp ``divergence``: backward differences ``(v1[x] - v1[x-1]) + (v2[y] - v2[y-1])``,
    with the sample before the first column / row taken as 0."""
    v1x = torch.diff(v1, dim=2, prepend=torch.zeros_like(v1[:, :, :1]))
    v2y = torch.diff(v2, dim=1, prepend=torch.zeros_like(v2[:, :1]))
    return v1x + v2y
