"""OpenCV's CPU Dual TV-L1 optical flow, step by step, batched over frame pairs in PyTorch.

Port of opencv_contrib ``modules/optflow/src/tvl1flow.cpp`` (``OpticalFlowDual_TVL1::calc`` and
``procOneScale`` with the helpers ``centeredGradient``, ``forwardGradient``, ``divergence``,
``buildFlowMap``, ``calcGradRho``, ``estimateV``, ``estimateU``, ``estimateDualVariables``); the
steps are listed in docs/features.md. Every pair keeps its own stopping rule (the inner and outer
loops stop when the pair's summed squared update falls to ``epsilon**2 * H * W``), so a batch gives
the same flows as the pairs one at a time.

Float32 throughout in OpenCV's operation order (``hypot`` in double, as OpenCV), so the flow equals
OpenCV's bit for bit on its portable code path (docs/features.md names the sources and the three
details that make it equal). ``gamma`` (illumination term) and ``use_initial_flow`` are not ported:
the torch backend refuses them.
"""

from __future__ import annotations

from typing import Callable, List, NamedTuple, Tuple

import functools

import numpy as np
import torch

from i3d_convert.errors import I3DConvertError
from i3d_convert.flow import ops
from i3d_convert.flow.tvl1 import TVL1Params

__all__ = ["MIN_PYRAMID_SIDE", "pyramid_sizes", "tvl1_flow_batch"]

#: OpenCV stops building the pyramid at the first level with a side below 16 pixels.
MIN_PYRAMID_SIDE = 16
_FLT_EPSILON = float(torch.finfo(torch.float32).eps)


def pyramid_sizes(height: int, width: int, params: TVL1Params) -> List[Tuple[int, int]]:
    """Sizes of the levels ``calc`` builds: each ``scale_step`` times the last, while both sides >= 16."""
    sizes = [(height, width)]
    for _ in range(1, params.nscales):
        h, w = ops.pyramid_size(*sizes[-1], params.scale_step)
        if h < MIN_PYRAMID_SIDE or w < MIN_PYRAMID_SIDE:
            break
        sizes.append((h, w))
    return sizes


def _check(prev: torch.Tensor, nxt: torch.Tensor, params: TVL1Params) -> None:
    ops.check_frame_pairs(prev, nxt)
    if params.gamma != 0 or params.use_initial_flow:
        raise I3DConvertError("the torch TV-L1 backend implements gamma=0 and use_initial_flow=False "
                              "(OpenCV's defaults); use backend='opencv' for the others")
    if params.median_filtering > 1 and params.median_filtering not in (3, 5):
        raise I3DConvertError(f"median_filtering must be 1, 3 or 5 (OpenCV's float median), got {params.median_filtering}")


def _as_image(x: torch.Tensor) -> torch.Tensor:
    # calc(): I0.convertTo(I0s[0], CV_32F, I0.depth() == CV_8U ? 1.0 : 255.0)
    return x.to(torch.float32) if x.dtype == torch.uint8 else x * 255.0


def tvl1_flow_batch(prev: torch.Tensor, nxt: torch.Tensor, params: TVL1Params | None = None,
                    subpixel: str = "float", compile: bool = False) -> torch.Tensor:
    """TV-L1 flow from ``prev[b]`` to ``nxt[b]`` for every pair of the batch.

    Args:
        prev, nxt: ``[B, H, W]`` gray frames, uint8 (0..255) or float32 (0..1, scaled by 255
            as OpenCV does), on any device.
        params: OpenCV's parameters (default :class:`TVL1Params()`, OpenCV's defaults).
        subpixel: the warp's sub-pixel rule (:func:`ops.remap_cubic`): ``"float"`` as OpenCV 5.x
            (checked: 5.1.0), ``"table"`` (1/32 pixel) as OpenCV <= 4.10.
        compile: run the inner iteration and the median through ``torch.compile`` (fused loops
            instead of about 40 and 200 kernels; the same bits, tested; the first call of a process
            compiles for about a minute).

    Returns:
        float32 ``[B, H, W, 2]`` on the input's device: channel 0 = x, 1 = y, in pixels, such that
        ``prev(y, x) ~ nxt(y + flow_y, x + flow_x)``; equal bit for bit to ``cv2.optflow``'s flow on
        OpenCV's portable path (:func:`i3d_convert.flow.tvl1.portable_opencv`).
    """
    params = params or TVL1Params()
    _check(prev, nxt, params)
    sizes = pyramid_sizes(prev.shape[1], prev.shape[2], params)
    i0s, i1s = [_as_image(prev)], [_as_image(nxt)]
    for h, w in sizes[1:]:
        i0s.append(ops.resize_linear(i0s[-1], h, w, params.scale_step, params.scale_step))
        i1s.append(ops.resize_linear(i1s[-1], h, w, params.scale_step, params.scale_step))
    u1 = torch.zeros_like(i0s[-1])
    u2 = torch.zeros_like(i0s[-1])
    for s in range(len(sizes) - 1, -1, -1):
        u1, u2 = _one_scale(i0s[s], i1s[s], u1, u2, params, subpixel,
                            _compiled_steps() if compile else _EAGER_STEPS)
        if s == 0:
            break
        h, w = sizes[s - 1]
        up = 1.0 / params.scale_step
        u1 = ops.resize_linear(u1, h, w) * up
        u2 = ops.resize_linear(u2, h, w) * up
    return torch.stack([u1, u2], dim=-1)


def _one_scale(i0: torch.Tensor, i1: torch.Tensor, u1: torch.Tensor, u2: torch.Tensor,
               params: TVL1Params, subpixel: str, steps) -> Tuple[torch.Tensor, torch.Tensor]:
    """``procOneScale``: ``warps`` warpings, each outer/inner iterations until the pair converges."""
    b, h, w = i0.shape
    scaled_epsilon = float(torch.tensor(params.epsilon * params.epsilon * (h * w), dtype=torch.float32))
    l_t = float(torch.tensor(params.lambda_ * params.theta, dtype=torch.float32))
    taut = float(torch.tensor(params.tau / params.theta, dtype=torch.float32))
    theta = float(torch.tensor(params.theta, dtype=torch.float32))
    i1x, i1y = ops.centered_gradient(i1)
    p = [torch.zeros_like(i0) for _ in range(4)]  # p11, p12, p21, p22
    grid_y = torch.arange(h, device=i0.device, dtype=torch.float32)[None, :, None]
    grid_x = torch.arange(w, device=i0.device, dtype=torch.float32)[None, None, :]
    for _ in range(params.warps):
        # buildFlowMap, remap(..., INTER_CUBIC) of I1 and its gradient (default border: constant 0)
        map_x, map_y = grid_x + u1, grid_y + u2
        i1w, i1wx, i1wy = (ops.remap_cubic(img, map_x, map_y, subpixel=subpixel) for img in (i1, i1x, i1y))
        # calcGradRho
        grad = i1wx * i1wx + i1wy * i1wy
        rho_c = i1w - i1wx * u1 - i1wy * u2 - i0
        warped = (i1wx, i1wy, grad, rho_c)
        active = torch.ones(b, dtype=torch.bool, device=i0.device)  # error = FLT_MAX > epsilon
        for _ in range(params.outer_iterations):
            if not bool(active.any()):
                break
            if params.median_filtering > 1:
                u1 = _where(active, steps.median(u1, params.median_filtering), u1)
                u2 = _where(active, steps.median(u2, params.median_filtering), u2)
            for _ in range(params.inner_iterations):
                if not bool(active.any()):
                    break
                new_u1, new_u2, new_p, terms, total = steps.inner(warped, u1, u2, p, l_t, theta, taut)
                if bool(active.all()):
                    u1, u2, p = new_u1, new_u2, new_p
                else:  # converged pairs keep their state
                    u1, u2 = _where(active, new_u1, u1), _where(active, new_u2, u2)
                    p = [_where(active, n, o) for n, o in zip(new_p, p)]
                active = active & _sum_exceeds(terms, total, scaled_epsilon)
    return u1, u2


def _where(active: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    return torch.where(active[:, None, None], new, old)


class _Steps(NamedTuple):
    """The two steps run many times per pair: eager, or each compiled into one fused loop."""

    inner: Callable
    median: Callable


@functools.cache
def _compiled_steps() -> _Steps:
    return _Steps(torch.compile(_inner_iteration, dynamic=True), torch.compile(ops.median_blur, dynamic=True))


def _inner_iteration(warped, u1, u2, p, l_t: float, theta: float, taut: float):
    """One inner iteration: ``estimateV``, ``divergence``, ``estimateU``, ``forwardGradient``,
    ``estimateDualVariables``. Returns the new u1, u2, p, each pixel's squared update and each
    pair's float64 sum of them (the stopping rule: :func:`_sum_exceeds`)."""
    i1wx, i1wy, grad, rho_c = warped
    p11, p12, p21, p22 = p
    # estimateV: thresholding step; the three cases as one coefficient on the warped gradient
    rho = rho_c + (i1wx * u1 + i1wy * u2)
    lt_grad = l_t * grad
    fi = torch.where(grad > _FLT_EPSILON, -rho / grad, 0.0)
    coef = torch.where(rho < -lt_grad, l_t, torch.where(rho > lt_grad, -l_t, fi))
    d1 = coef * i1wx
    d2 = coef * i1wy
    v1 = u1 + d1
    v2 = u2 + d2
    # divergence of the dual variables, estimateU
    new_u1 = v1 + theta * ops.divergence(p11, p12)
    new_u2 = v2 + theta * ops.divergence(p21, p22)
    du1, du2 = new_u1 - u1, new_u2 - u2
    terms = du1 * du1 + du2 * du2
    total = terms.sum(dim=(1, 2), dtype=torch.float64)
    # forwardGradient, estimateDualVariables
    u1x, u1y = ops.forward_gradient(new_u1)
    u2x, u2y = ops.forward_gradient(new_u2)
    ng1 = 1.0 + taut * _hypot(u1x, u1y)
    ng2 = 1.0 + taut * _hypot(u2x, u2y)
    new_p = [(p11 + taut * u1x) / ng1, (p12 + taut * u1y) / ng1,
             (p21 + taut * u2x) / ng2, (p22 + taut * u2y) / ng2]
    return new_u1, new_u2, new_p, terms, total


_EAGER_STEPS = _Steps(_inner_iteration, ops.median_blur)


def _hypot(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``(float)hypot(x, y)`` as estimateDualVariables computes it: in double, rounded once to float
    (torch.hypot's float32 kernel may differ by an ulp)."""
    x64, y64 = x.double(), y.double()
    return torch.sqrt(x64 * x64 + y64 * y64).float()


def _sum_exceeds(terms: torch.Tensor, total: torch.Tensor, threshold: float) -> torch.Tensor:
    """Whether each pair's ``float error += terms[y, x]`` (estimateU: row-major, float32) exceeds
    ``threshold``, decided exactly as OpenCV's loop decides it.

    The stopping rule must round as OpenCV's sum does: a pairwise or float64 sum decides otherwise
    in a few iterations per video, and the flow then drifts (TV-L1 is not stable to such changes).
    ``total`` (each pair's float64 sum of ``terms``, computed on the device) decides whenever it is
    farther from the threshold than the float32 loop's rounding can move it (``(n - 1) 2^-24`` times the sum for ``n`` non-negative terms, with
    a factor 2 to spare); the few pairs within that margin are summed in order on the CPU.
    """
    flat = terms.reshape(terms.shape[0], -1)
    margin = total * (2.0 * flat.shape[1] * 2.0 ** -24)
    exceeds = total > threshold
    close = (total - threshold).abs() <= margin
    if bool(close.any()):
        rows = close.nonzero().flatten()
        exact = _sequential_sum(flat[rows])
        exceeds[rows] = torch.from_numpy(exact > np.float32(threshold)).to(exceeds.device)
    return exceeds


def _sequential_sum(flat: torch.Tensor) -> np.ndarray:
    """float32 ``[R]``: each row of ``flat`` summed in order in float32 (NumPy's float32 cumsum adds in order)."""
    return np.cumsum(flat.detach().cpu().numpy(), axis=1, dtype=np.float32)[:, -1]
