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

from i3d_convert.errors import I3DConvertError

__all__ = [
    "INTER_TAB_SIZE",
    "check_frame_pairs",
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


def check_frame_pairs(prev: torch.Tensor, nxt: torch.Tensor) -> None:
    """Refuse (one line) frame pairs that are not two ``[B, H, W]`` uint8 or float32 tensors of one shape."""
    if prev.shape != nxt.shape or prev.ndim != 3:
        raise I3DConvertError(f"frame pairs must be two [B, H, W] tensors of one shape, got "
                              f"{tuple(prev.shape)} and {tuple(nxt.shape)}")
    if prev.dtype not in (torch.uint8, torch.float32) or nxt.dtype != prev.dtype:
        raise I3DConvertError(f"frames must be uint8 (0..255) or float32 (0..1), got {prev.dtype}/{nxt.dtype}")


def pyramid_size(height: int, width: int, scale: float) -> Tuple[int, int]:
    """Size of ``cv2.resize(src, None, fx=scale, fy=scale)``: each side ``round(side * scale)``."""
    # OpenCV: dsize = Size(saturate_cast<int>(ssize.width * inv_scale_x), ...), i.e. cvRound.
    return int(np.rint(height * scale)), int(np.rint(width * scale))


def _linear_taps(src_len: int, dst_len: int, inv_scale: float,
                 clamp_fraction: bool) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Both source indices and the second tap's weight of ``resize`` INTER_LINEAR along one axis.

    Follows cv::hal::resize's coefficient setup (imgproc/src/resize.cpp, OpenCV 5.1.0 lines
    3476-3516 for x, 3532-3557 for y): ``f = (float)((d + 0.5) * scale - 0.5)`` in double then
    float, ``s = floor(f)``, weight of the second tap ``f - s`` in float. Along x a tap outside the
    image takes the edge sample with weight 0 (``fx = 0``); along y the weight is kept and only the
    row index is clipped (``resizeGeneric_Invoker``: ``clip(sy, 0, height)``), so the first and last
    rows of an upscale are ``r * (1 - f) + r * f``, which is not always ``r`` in float32.
    """
    scale = 1.0 / inv_scale
    f = ((np.arange(dst_len, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    s = np.floor(f).astype(np.int64)
    frac = (f - s.astype(np.float32)).astype(np.float32)
    if clamp_fraction:
        low, high = s < 0, s >= src_len - 1
        frac[low], s[low] = 0.0, 0
        frac[high], s[high] = 0.0, src_len - 1
    return np.clip(s, 0, src_len - 1), np.clip(s + 1, 0, src_len - 1), frac


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
    sx0, sx1, ax = _linear_taps(w, width, inv_scale_x if inv_scale_x is not None else width / w, True)
    sy0, sy1, ay = _linear_taps(h, height, inv_scale_y if inv_scale_y is not None else height / h, False)
    dev = src.device
    ax1 = torch.from_numpy(ax).to(dev)
    ax0 = 1.0 - ax1
    rows = src[:, :, torch.from_numpy(sx0).to(dev)] * ax0 + src[:, :, torch.from_numpy(sx1).to(dev)] * ax1
    ay1 = torch.from_numpy(ay).to(dev)[:, None]
    ay0 = 1.0 - ay1
    return rows[:, torch.from_numpy(sy0).to(dev), :] * ay0 + rows[:, torch.from_numpy(sy1).to(dev), :] * ay1


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
                border: str = "constant", subpixel: str = "float", fused: bool = False) -> torch.Tensor:
    """``cv2.remap(src, map_x, map_y, INTER_CUBIC, borderMode)`` for float32 images, bit for bit.

    How the sub-pixel position enters depends on the OpenCV version; both are offered:

    * ``subpixel="float"``: OpenCV 5.x's table-free kernel (imgproc/src/warp_kernels.simd.hpp,
      5.1.0: ``bicubicCoeffs``/``bicubicWeights`` for ``v_float32``, lines 7340-7414, and
      ``BICUBIC_UPDATE_ACC_VEC``, line 7175): offset ``alpha = x - floor(x)`` as a float, weights
      ``A alpha (1-alpha)^2``, ``alpha^2 ((A+2) alpha - (A+3)) + 1``, ``1 - w0 - w1 - w3``,
      ``A alpha^2 (1-alpha)`` with A = -0.75, each row ``((v0 w0 + v1 w1) + v2 w2) + v3 w3`` times
      its row weight, accumulated row by row. ``fused``: the multiply-adds fused (one rounding), as
      OpenCV's AVX2 build of that kernel computes them (``v_fma`` is FMA3 there); unfused is the
      baseline (SSE) build, which ``cv2.setUseOptimized(False)`` selects. Float32 FMA is computed
      in float64 and rounded once: equal to a true FMA except in double-rounding ties (about one
      operation in 2^29).
    * ``subpixel="table"``: OpenCV <= 4.10 (``cvRound(map * INTER_TAB_SIZE)``, offset index
      ``0..31``, 2-D weights from the float table of ``initInterTab2D``), which 4.x used for float
      maps and fixed-point maps (``cv2.convertMaps``) alike.

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
        taps = _taps_4x4(src, x0, y0, border)
        return _sum_table_4x4(taps, wx, wy)
    if subpixel != "float":
        raise ValueError(f"subpixel must be 'float' or 'table', got {subpixel!r}")
    _, h, w = src.shape
    # bicubicCoeffs clamps coordinates to [-max(W, 16), 2 max(W, 16)] before the floor
    big_w, big_h = float(max(w, 16)), float(max(h, 16))
    vx = map_x.clamp(-big_w, 2 * big_w)
    vy = map_y.clamp(-big_h, 2 * big_h)
    fx, fy = torch.floor(vx), torch.floor(vy)
    wx, wy = _cubic_weights(vx - fx, fused), _cubic_weights(vy - fy, fused)
    taps = _taps_4x4(src, fx.to(torch.int64) - 1, fy.to(torch.int64) - 1, border)
    acc = None
    for r in range(4):
        row = taps[r][0] * wx[0]
        for c in range(1, 4):
            row = _muladd(taps[r][c], wx[c], row, fused)
        acc = row * wy[0] if acc is None else _muladd(row, wy[r], acc, fused)
    return acc


def _muladd(a: torch.Tensor, b, c: torch.Tensor, fused: bool) -> torch.Tensor:
    """``a * b + c`` in float32: two roundings, or one (FMA, via float64) when ``fused``."""
    if not fused:
        return a * b + c
    b64 = b.double() if isinstance(b, torch.Tensor) else b
    return (a.double() * b64 + c.double()).float()


_CUBIC_A = -0.75


def _cubic_weights(alpha: torch.Tensor, fused: bool):
    """OpenCV 5.x ``bicubicWeights`` (v_float32 form) for offsets ``alpha`` in [0, 1): four float32 tensors."""
    a2 = alpha * alpha
    b = 1.0 - alpha
    b2 = b * b
    w0 = _CUBIC_A * (alpha * b2)
    w3 = _CUBIC_A * (a2 * b)
    w1 = _muladd(a2, _muladd(alpha, _CUBIC_A + 2.0, torch.full_like(alpha, -(_CUBIC_A + 3.0)), fused),
                 torch.ones_like(alpha), fused)
    w2 = ((1.0 - w0) - w1) - w3
    return w0, w1, w2, w3


def _taps_4x4(src: torch.Tensor, x0: torch.Tensor, y0: torch.Tensor, border: str):
    """``taps[r][c] = src[y0 + r, x0 + c]`` (float32, shaped like ``x0``), 0 or the edge outside."""
    b, h, w = src.shape
    flat = src.reshape(b, h * w)
    taps = []
    for r in range(4):
        yr = y0 + r
        y_in = (yr >= 0) & (yr < h)
        row_idx = yr.clamp(0, h - 1) * w
        row = []
        for c in range(4):
            xc = x0 + c
            idx = row_idx + xc.clamp(0, w - 1)
            val = flat.gather(1, idx.reshape(b, -1)).reshape(idx.shape)
            if border == "constant":
                val = torch.where(y_in & (xc >= 0) & (xc < w), val, 0.0)
            row.append(val)
        taps.append(row)
    return taps


def _sum_table_4x4(taps, wx: torch.Tensor, wy: torch.Tensor) -> torch.Tensor:
    """OpenCV 4.x ``remapBicubic``: ``sum += ((t0 + t1) + t2) + t3`` per row, ``t = v * (wy * wx)``."""
    out = None
    for r in range(4):
        row = None
        for c in range(4):
            term = taps[r][c] * (wy[..., r] * wx[..., c])
            row = term if row is None else row + term
        out = row if out is None else out + row
    return out


def median_blur(src: torch.Tensor, ksize: int) -> torch.Tensor:
    """``cv2.medianBlur(src, ksize)`` for float32 (ksize 3 or 5, as OpenCV allows): median of the
    ``ksize x ksize`` window with replicated borders.

    Computed by a selection network of elementwise minima and maxima over the window's shifted
    views (:func:`_median_network`), which is exact (a median selects one of the values) and was
    measured 6.5 times faster than sorting a stack of the ``ksize^2`` views (one 224x224 pair, 2 cores)."""
    if ksize not in (3, 5):
        raise ValueError(f"float median filter supports ksize 3 or 5 (as OpenCV), got {ksize}")
    r = ksize // 2
    padded = F.pad(src[:, None], (r, r, r, r), mode="replicate")[:, 0]
    _, h, w = src.shape
    wires = [padded[:, i:i + h, j:j + w] for i in range(ksize) for j in range(ksize)]
    for op, i, j, need_min, need_max in _MEDIAN_NETWORKS[ksize]:
        if op == "swap":
            wires[i], wires[j] = wires[j], wires[i]
            continue
        a, b = wires[i], wires[j]
        wires[i] = torch.minimum(a, b) if need_min else None
        wires[j] = torch.maximum(a, b) if need_max else None
    return wires[ksize * ksize // 2].contiguous()


def _batcher_network(n: int):
    """Batcher's odd-even merge sort on ``n`` (a power of 2) wires: comparators ``(i, j)``, ``i < j``,
    each leaving the minimum on wire ``i`` and the maximum on wire ``j``."""
    def merge(lo: int, size: int, r: int):
        step = 2 * r
        if step < size:
            yield from merge(lo, size, step)
            yield from merge(lo + r, size, step)
            for i in range(lo + r, lo + size - r, step):
                yield i, i + r
        else:
            yield lo, lo + r

    def sort(lo: int, size: int):
        if size > 1:
            half = size // 2
            yield from sort(lo, half)
            yield from sort(lo + half, half)
            yield from merge(lo, size, 1)

    return list(sort(0, n))


def _median_network(count: int):
    """The operations that leave the median of ``count`` (odd) values on wire ``count // 2``.

    Batcher's network on the next power of two, the extra wires holding +inf: a comparator with an
    +inf wire is a no-op or a swap of names, and only comparators whose results reach the median's
    wire are kept (each computing only the minimum or maximum that is used). Returns
    ``(op, i, j, need_min, need_max)`` with ``op`` in ``"cmp"``, ``"swap"``."""
    size = 1 << (count - 1).bit_length()
    infinite = [k >= count for k in range(size)]
    ops = []
    for i, j in _batcher_network(size):
        if infinite[j]:
            continue  # min(a, inf) = a stays on i, inf stays on j
        if infinite[i]:
            ops.append(("swap", i, j))
            infinite[i], infinite[j] = False, True
            continue
        ops.append(("cmp", i, j))
    live = [False] * size
    live[count // 2] = True
    kept = []
    for op, i, j in reversed(ops):
        if op == "swap":
            live[i], live[j] = live[j], live[i]
            kept.append((op, i, j, False, False))
        elif live[i] or live[j]:
            kept.append((op, i, j, live[i], live[j]))
            live[i] = live[j] = True
    return tuple(reversed(kept))


#: The networks for OpenCV's float median sizes, built once (a plain dict, so that torch.compile
#: traces the loop over a constant).
_MEDIAN_NETWORKS = {k: _median_network(k * k) for k in (3, 5)}


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
    dx = torch.zeros_like(src)
    dy = torch.zeros_like(src)
    torch.sub(src[:, :, 1:], src[:, :, :-1], out=dx[:, :, :-1])
    torch.sub(src[:, 1:], src[:, :-1], out=dy[:, :-1])
    return dx, dy


def divergence(v1: torch.Tensor, v2: torch.Tensor) -> torch.Tensor:
    """tvl1flow.cpp ``divergence`` (opencv_contrib 5.1.0, lines 854-902): backward differences
    ``(v1[x] - v1[x-1]) + (v2[y] - v2[y-1])`` inside and on the first row (``v2[-1]`` = 0), but
    ``(v1 + v2) - v2[y-1]`` on the first column and ``v1 + v2`` at (0, 0), in that order."""
    v1x = torch.empty_like(v1)
    v2y = torch.empty_like(v2)
    torch.sub(v1[:, :, 1:], v1[:, :, :-1], out=v1x[:, :, 1:])
    v1x[:, :, 0] = v1[:, :, 0]
    torch.sub(v2[:, 1:], v2[:, :-1], out=v2y[:, 1:])
    v2y[:, 0] = v2[:, 0]
    out = v1x.add_(v2y)
    out[:, 1:, 0] = (v1[:, 1:, 0] + v2[:, 1:, 0]) - v2[:, :-1, 0]
    return out
