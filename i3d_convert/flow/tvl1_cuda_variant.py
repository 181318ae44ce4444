"""OpenCV's CUDA Dual TV-L1 (``cv::cuda::OpticalFlowDual_TVL1``), batched over frame pairs in PyTorch.

A second algorithm, not a second port of the CPU one: opencv_contrib
``modules/cudaoptflow/src/tvl1flow.cpp`` (host: pyramid, loops, stopping rule) and
``modules/cudaoptflow/src/cuda/tvl1flow.cu`` (kernels) differ from ``modules/optflow/src/tvl1flow.cpp``
in the pyramid resize (``cuda::resize``: source = destination * step, no half-pixel centres), the warp
(Catmull-Rom weights, A = -0.5, normalised by their sum, edge texels repeated), one loop of
``iterations`` without a median filter, and a stopping rule that sums the update only on some odd
iterations. docs/features.md ("OpenCV's CUDA variant") lists the steps and the differences with
file:line citations.

Float32 throughout. Runs on any torch device; it emulates the CUDA kernels' arithmetic operation by
operation, but not nvcc's fused multiply-adds, ``hypotf``'s and the GPU sum's rounding (no OpenCV CUDA
build was available to compare with). Every pair keeps its own stopping state, so a batch gives the
same flows as its pairs one at a time.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np
import torch

from i3d_convert.errors import I3DConvertError
from i3d_convert.flow import ops

__all__ = [
    "MIN_PYRAMID_SIDE",
    "TVL1CudaParams",
    "bicubic_coeff",
    "centered_gradient",
    "estimate_dual_variables",
    "estimate_u",
    "pyramid_sizes",
    "resize_linear",
    "tvl1_cuda_flow_batch",
    "warp_backward",
]

#: calcImpl stops building the pyramid at the first level with a side below 16 pixels.
MIN_PYRAMID_SIDE = 16
_FLT_EPSILON = float(np.finfo(np.float32).eps)


@dataclass(frozen=True)
class TVL1CudaParams:
    """Parameters of ``cv::cuda::OpticalFlowDual_TVL1::create`` (cudaoptflow.hpp), with its defaults.

    A sibling of :class:`~i3d_convert.flow.tvl1.TVL1Params` rather than a reading of it: the CUDA
    class has one ``iterations`` count where the CPU one has inner x outer iterations, and no median
    filter, so one dataclass per OpenCV class keeps every field meaning what it does there.
    :meth:`from_cpu` maps CPU parameters (OpenCV's CPU defaults map onto the CUDA defaults).

    Attributes:
        tau, lambda_, theta, nscales, warps, epsilon, scale_step, gamma: as the CPU class.
        iterations: iterations per warp (one loop; stops early by the rule in docs/features.md).
        use_initial_flow: start from a given flow (not supported here; refused).
    """

    tau: float = 0.25
    lambda_: float = 0.15
    theta: float = 0.3
    nscales: int = 5
    warps: int = 5
    epsilon: float = 0.01
    iterations: int = 300
    scale_step: float = 0.8
    gamma: float = 0.0
    use_initial_flow: bool = False

    @classmethod
    def from_cpu(cls, params) -> "TVL1CudaParams":
        """The CUDA parameters for CPU ones: shared fields copied, ``iterations = inner * outer``,
        the median filter dropped (the CUDA class has none)."""
        return cls(tau=params.tau, lambda_=params.lambda_, theta=params.theta, nscales=params.nscales,
                   warps=params.warps, epsilon=params.epsilon,
                   iterations=params.inner_iterations * params.outer_iterations,
                   scale_step=params.scale_step, gamma=params.gamma, use_initial_flow=params.use_initial_flow)

    def replace(self, **changes) -> "TVL1CudaParams":
        """Return a copy with some fields changed."""
        return dataclasses.replace(self, **changes)


def _f32(x: float) -> float:
    """A host double rounded to float32, as ``static_cast<float>``."""
    return float(np.float32(x))


def pyramid_sizes(height: int, width: int, params: TVL1CudaParams) -> List[Tuple[int, int]]:
    """Level sizes: ``cuda::resize(.., Size(), step, step)`` rounds ``side * step`` (resize.cpp
    ``saturate_cast<int>``), while both sides stay >= 16 (tvl1flow.cpp ``calcImpl``)."""
    sizes = [(height, width)]
    for _ in range(1, params.nscales):
        h, w = sizes[-1]
        h, w = int(np.rint(h * params.scale_step)), int(np.rint(w * params.scale_step))
        if h < MIN_PYRAMID_SIDE or w < MIN_PYRAMID_SIDE:
            break
        sizes.append((h, w))
    return sizes


def resize_linear(src: torch.Tensor, height: int, width: int, step_y: float, step_x: float) -> torch.Tensor:
    """``cuda::resize(.., INTER_LINEAR)`` for float32 (cudawarping ``resize_linear`` / ``LinearFilter``).

    Destination pixel ``d`` reads source ``s = d * step`` (float32; no half-pixel offset), taps
    ``floor(s)`` and ``floor(s) + 1`` (clamped to the last row/column), weights ``(x2 - s)`` and
    ``(s - x1)``, 2-D weight ``wx * wy``, summed in the order (y1,x1), (y1,x2), (y2,x1), (y2,x2).
    A same-size call is a copy (resize.cpp).

    Args:
        src: float32 ``[B, H, W]``.
        height, width: output size.
        step_y, step_x: the float32 source step per destination pixel (``1 / fy``, ``1 / fx``).
    """
    b, h, w = src.shape
    if (height, width) == (h, w):
        return src.clone()
    dev = src.device

    def taps(n_out: int, n_in: int, step: float):
        s = torch.arange(n_out, dtype=torch.float32, device=dev) * torch.tensor(step, dtype=torch.float32, device=dev)
        i1 = torch.floor(s)
        i2 = i1 + 1.0
        w_lo, w_hi = i2 - s, s - i1
        i1 = i1.to(torch.int64)
        return i1.clamp(0, n_in - 1), (i1 + 1).clamp(0, n_in - 1), w_lo, w_hi

    x1, x2, wx1, wx2 = taps(width, w, step_x)
    y1, y2, wy1, wy2 = taps(height, h, step_y)
    r1, r2 = src[:, y1], src[:, y2]
    wy1, wy2 = wy1[:, None], wy2[:, None]
    out = r1[:, :, x1] * (wx1 * wy1)
    out = out + r1[:, :, x2] * (wx2 * wy1)
    out = out + r2[:, :, x1] * (wx1 * wy2)
    return out + r2[:, :, x2] * (wx2 * wy2)


def centered_gradient(src: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """``centeredGradientKernel``: ``0.5f * (s[min(x+1, n-1)] - s[max(x-1, 0)])`` along x and y."""
    px = torch.cat([src[:, :, :1], src, src[:, :, -1:]], dim=2)
    py = torch.cat([src[:, :1], src, src[:, -1:]], dim=1)
    return 0.5 * (px[:, :, 2:] - px[:, :, :-2]), 0.5 * (py[:, 2:] - py[:, :-2])


def bicubic_coeff(x: torch.Tensor) -> torch.Tensor:
    """tvl1flow.cu ``bicubicCoeff`` (Catmull-Rom, A = -0.5) of float32 offsets, its operation order."""
    x = torch.abs(x)
    near = x * x * (1.5 * x - 2.5) + 1.0
    far = x * (x * (-0.5 * x + 2.5) - 4.0) + 2.0
    return torch.where(x <= 1.0, near, torch.where(x < 2.0, far, torch.zeros_like(x)))


def warp_backward(i0: torch.Tensor, i1: torch.Tensor, i1x: torch.Tensor, i1y: torch.Tensor,
                  u1: torch.Tensor, u2: torch.Tensor) -> Tuple[torch.Tensor, ...]:
    """``warpBackwardKernel``: I1 and its gradient at ``(x + u1, y + u2)``, |grad|^2 and rho's constant part.

    Taps ``ceil(w - 2) .. floor(w + 2)`` per axis (4, or 5 at whole positions) with weight
    ``bicubicCoeff(wx - cx) * bicubicCoeff(wy - cy)``; texels outside the image repeat the edge
    (texture clamp addressing); one running sum per image in row-major tap order, then ``* (1 / wsum)``.
    The fifth tap of each axis is always visited here: where the kernel does not visit it its offset
    is >= 2 and its weight exactly 0, so the sums are the same.

    Returns:
        ``(I1w, I1wx, I1wy, grad, rho_c)``, each float32 ``[B, H, W]``.
    """
    b, h, w = i0.shape
    dev = i0.device
    wx = torch.arange(w, dtype=torch.float32, device=dev)[None, None, :] + u1
    wy = torch.arange(h, dtype=torch.float32, device=dev)[None, :, None] + u2
    big = float(1 << 24)  # keeps the integer conversion defined for absurd flows
    xmin = torch.ceil(wx - 2.0).clamp(-big, big).to(torch.int64)
    ymin = torch.ceil(wy - 2.0).clamp(-big, big).to(torch.int64)
    flat = [t.reshape(b, h * w) for t in (i1, i1x, i1y)]
    sums = [torch.zeros_like(i0) for _ in range(3)]
    wsum = torch.zeros_like(i0)
    for r in range(5):
        cy = ymin + r
        coef_y = bicubic_coeff(wy - cy.to(torch.float32))
        row = cy.clamp(0, h - 1) * w
        for c in range(5):
            cx = xmin + c
            weight = bicubic_coeff(wx - cx.to(torch.float32)) * coef_y
            idx = (row + cx.clamp(0, w - 1)).reshape(b, -1)
            for k in range(3):
                sums[k] = sums[k] + weight * flat[k].gather(1, idx).reshape(b, h, w)
            wsum = wsum + weight
    coeff = 1.0 / wsum
    i1w, i1wx, i1wy = (s * coeff for s in sums)
    grad = i1wx * i1wx + i1wy * i1wy
    rho_c = i1w - i1wx * u1 - i1wy * u2 - i0
    return i1w, i1wx, i1wy, grad, rho_c


def _divergence(v1: torch.Tensor, v2: torch.Tensor) -> torch.Tensor:
    """tvl1flow.cu ``divergence`` with its border cases' operation order: ``(v1[x] - v1[x-1]) +
    (v2[y] - v2[y-1])`` inside, ``(v1 + v2) - v2[y-1]`` on column 0, ``(v1[x] - v1[x-1]) + v2`` on row 0."""
    out = (v1[:, :, 1:] - v1[:, :, :-1])
    inner = out[:, 1:] + (v2[:, 1:, 1:] - v2[:, :-1, 1:])
    top = out[:, :1] + v2[:, :1, 1:]
    col0 = torch.cat([v1[:, :1, :1] + v2[:, :1, :1], (v1[:, 1:, :1] + v2[:, 1:, :1]) - v2[:, :-1, :1]], dim=1)
    return torch.cat([col0, torch.cat([top, inner], dim=1)], dim=2)


def estimate_u(warped: Tuple[torch.Tensor, ...], u: List[torch.Tensor], p: List[torch.Tensor],
               l_t: float, theta: float, gamma: float) -> Tuple[List[torch.Tensor], torch.Tensor]:
    """``estimateUKernel``: thresholding (v), divergence of p, the new flow and the squared update.

    Args:
        warped: ``(I1wx, I1wy, grad, rho_c)`` from :func:`warp_backward`.
        u: ``[u1, u2]``, or ``[u1, u2, u3]`` when ``gamma != 0``.
        p: ``[p11, p12, p21, p22]`` (+ ``p31, p32`` when ``gamma != 0``).
        l_t, theta, gamma: float32 values (``lambda * theta``, ``theta``, ``gamma``).

    Returns:
        ``(new u, diff)``: ``diff = (u1 - u1new)^2 + (u2 - u2new)^2`` per pixel (u3 not counted).
    """
    i1wx, i1wy, grad, rho_c = warped
    u1, u2 = u[0], u[1]
    lin = i1wx * u1 + i1wy * u2
    if gamma:
        lin = lin + gamma * u[2]
    rho = rho_c + lin
    lt_grad = l_t * grad
    fi = torch.where(grad > _FLT_EPSILON, -rho / grad, torch.zeros_like(rho))
    # the three cases (and "no step" where grad <= FLT_EPSILON) as one coefficient on I1wx, I1wy, gamma
    coef = torch.where(rho < -lt_grad, torch.full_like(rho, l_t), torch.where(rho > lt_grad, torch.full_like(rho, -l_t), fi))
    new = [u1 + coef * i1wx + theta * _divergence(p[0], p[1]),
           u2 + coef * i1wy + theta * _divergence(p[2], p[3])]
    if gamma:
        new.append(u[2] + coef * gamma + theta * _divergence(p[4], p[5]))
    d1, d2 = u1 - new[0], u2 - new[1]
    return new, d1 * d1 + d2 * d2


def estimate_dual_variables(u: List[torch.Tensor], p: List[torch.Tensor], taut: float) -> List[torch.Tensor]:
    """``estimateDualVariablesKernel``: forward differences (0 on the last column/row), ``hypotf``,
    ``p = (p + taut * du) / (1 + taut * |du|)`` for each flow component."""
    out = []
    for k, uk in enumerate(u):
        ux = torch.cat([uk[:, :, 1:], uk[:, :, -1:]], dim=2) - uk
        uy = torch.cat([uk[:, 1:], uk[:, -1:]], dim=1) - uk
        ng = 1.0 + taut * torch.hypot(ux, uy)
        out += [(p[2 * k] + taut * ux) / ng, (p[2 * k + 1] + taut * uy) / ng]
    return out


def _check(prev: torch.Tensor, nxt: torch.Tensor, params: TVL1CudaParams) -> None:
    ops.check_frame_pairs(prev, nxt)
    if params.use_initial_flow:
        raise I3DConvertError("the CUDA-variant TV-L1 takes no initial flow (use_initial_flow must be False)")
    if params.nscales < 1 or params.warps < 0 or params.iterations < 0:
        raise I3DConvertError(f"nscales must be >= 1 and warps, iterations >= 0, got {params.nscales}, "
                              f"{params.warps}, {params.iterations}")


def tvl1_cuda_flow_batch(prev: torch.Tensor, nxt: torch.Tensor,
                         params: Optional[TVL1CudaParams] = None) -> torch.Tensor:
    """OpenCV CUDA TV-L1 flow from ``prev[b]`` to ``nxt[b]`` for every pair of the batch.

    Args:
        prev, nxt: ``[B, H, W]`` gray frames, uint8 (0..255) or float32 (0..1, scaled by 255 as
            ``calcImpl`` does), on any device.
        params: the CUDA class's parameters (default :class:`TVL1CudaParams()`, its defaults).

    Returns:
        float32 ``[B, H, W, 2]`` on the input's device: channel 0 = x, 1 = y, in pixels.
    """
    params = params or TVL1CudaParams()
    _check(prev, nxt, params)
    sizes = pyramid_sizes(prev.shape[1], prev.shape[2], params)
    as_img = (lambda x: x.to(torch.float32)) if prev.dtype == torch.uint8 else (lambda x: x * 255.0)
    i0s, i1s = [as_img(prev)], [as_img(nxt)]
    step = _f32(1.0 / params.scale_step)
    for h, w in sizes[1:]:
        i0s.append(resize_linear(i0s[-1], h, w, step, step))
        i1s.append(resize_linear(i1s[-1], h, w, step, step))
    gamma = _f32(params.gamma)
    u = [torch.zeros_like(i0s[-1]) for _ in range(3 if gamma else 2)]
    up = _f32(1.0 / params.scale_step)
    for s in range(len(sizes) - 1, -1, -1):
        u = _one_scale(i0s[s], i1s[s], u, params, gamma)
        if s == 0:
            break
        (h, w), (h0, w0) = sizes[s - 1], sizes[s]
        # cuda::resize with a size: fx = dst / src in double, the kernel gets float(1 / fx)
        sy, sx = _f32(1.0 / (h / h0)), _f32(1.0 / (w / w0))
        u = [resize_linear(uk, h, w, sy, sx) for uk in u]
        u[0], u[1] = u[0] * up, u[1] * up  # u3 is resized but not rescaled (calcImpl)
    return torch.stack([u[0], u[1]], dim=-1)


def _one_scale(i0: torch.Tensor, i1: torch.Tensor, u: List[torch.Tensor], params: TVL1CudaParams,
               gamma: float) -> List[torch.Tensor]:
    """``procOneScale``: ``warps`` warps of up to ``iterations`` iterations, each pair with its own
    stopping state (``error``, ``prevError``) exactly as the host loop keeps it."""
    b, h, w = i0.shape
    scaled_eps = params.epsilon * params.epsilon * (h * w)  # double, as the host code
    l_t, taut, theta = _f32(params.lambda_ * params.theta), _f32(params.tau / params.theta), _f32(params.theta)
    i1x, i1y = centered_gradient(i1)
    p = [torch.zeros_like(i0) for _ in range(6 if gamma else 4)]
    for _ in range(params.warps):
        _, i1wx, i1wy, grad, rho_c = warp_backward(i0, i1, i1x, i1y, u[0], u[1])
        warped = (i1wx, i1wy, grad, rho_c)
        error = [float("inf")] * b  # DBL_MAX
        prev_error = [0.0] * b
        for n in range(params.iterations):
            active = [e > scaled_eps for e in error]
            if not any(active):
                break
            # "some tweaks to make sum operation less frequently": sum only on odd n, and only once the
            # last sum, lowered by scaled_eps per skipped iteration, is below scaled_eps
            calc = [params.epsilon > 0 and bool(n & 1) and pe < scaled_eps for pe in prev_error]
            new_u, diff = estimate_u(warped, u, p, l_t, theta, gamma)
            sums = None
            if any(a and c for a, c in zip(active, calc)):
                sums = diff.sum(dim=(1, 2), dtype=torch.float64).tolist()
            for k in range(b):
                if not active[k]:
                    continue
                if calc[k]:
                    error[k] = prev_error[k] = sums[k]
                else:
                    error[k] = float("inf")
                    prev_error[k] -= scaled_eps
            new_p = estimate_dual_variables(new_u, p, taut)
            if all(active):
                u, p = new_u, new_p
            else:  # finished pairs keep their state
                mask = torch.tensor(active, device=i0.device)[:, None, None]
                u = [torch.where(mask, nw, old) for nw, old in zip(new_u, u)]
                p = [torch.where(mask, nw, old) for nw, old in zip(new_p, p)]
    return u
