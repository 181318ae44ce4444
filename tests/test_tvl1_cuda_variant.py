"""OpenCV's CUDA TV-L1 in PyTorch (i3d_convert/flow/tvl1_cuda_variant.py), checked without OpenCV CUDA.

No OpenCV CUDA build is available (the wheels have none), so each kernel is compared with a plain
per-pixel transcription of opencv_contrib ``modules/cudaoptflow/src/cuda/tvl1flow.cu`` and
``modules/cudawarping/src/cuda/resize.cu`` written below (numpy float32 scalars, one thread's work
per loop step, tiny images); the warp's weights with values worked out by hand; the whole algorithm
by its error to known motion next to OpenCV's CPU algorithm.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from i3d_convert.errors import I3DConvertError
from i3d_convert.flow import tvl1_cuda_variant as cv
from i3d_convert.flow.synthetic import textured_pair
from i3d_convert.flow.tvl1 import TVL1Params
from i3d_convert.flow.tvl1_cuda_variant import TVL1CudaParams, tvl1_cuda_flow_batch

f32 = np.float32
H, W = 9, 11


def _rand(seed: int, scale: float = 255.0, h: int = H, w: int = W) -> np.ndarray:
    return (np.random.default_rng(seed).random((h, w)) * scale).astype(f32)


def _t(*arrays: np.ndarray):
    out = tuple(torch.from_numpy(np.ascontiguousarray(a))[None] for a in arrays)
    return out if len(out) > 1 else out[0]


# ------------------------------------------------------------- transcriptions of the kernels
def ref_resize_linear(src: np.ndarray, dh: int, dw: int, fy: float, fx: float) -> np.ndarray:
    """resize.cu ``resize_linear`` (glob path) / ``LinearFilter`` on a clamped texture."""
    fy, fx = f32(fy), f32(fx)
    out = np.zeros((dh, dw), f32)
    for dy in range(dh):
        for dx in range(dw):
            sx, sy = f32(dx) * fx, f32(dy) * fy
            x1, y1 = int(np.floor(sx)), int(np.floor(sy))
            x2, y2 = x1 + 1, y1 + 1
            x2r, y2r = min(x2, src.shape[1] - 1), min(y2, src.shape[0] - 1)
            o = f32(0)
            o = o + src[y1, x1] * ((f32(x2) - sx) * (f32(y2) - sy))
            o = o + src[y1, x2r] * ((sx - f32(x1)) * (f32(y2) - sy))
            o = o + src[y2r, x1] * ((f32(x2) - sx) * (sy - f32(y1)))
            o = o + src[y2r, x2r] * ((sx - f32(x1)) * (sy - f32(y1)))
            out[dy, dx] = o
    return out


def ref_centered_gradient(s: np.ndarray):
    h, w = s.shape
    dx, dy = np.zeros_like(s), np.zeros_like(s)
    for y in range(h):
        for x in range(w):
            dx[y, x] = f32(0.5) * (s[y, min(x + 1, w - 1)] - s[y, max(x - 1, 0)])
            dy[y, x] = f32(0.5) * (s[min(y + 1, h - 1), x] - s[max(y - 1, 0), x])
    return dx, dy


def ref_bicubic(x_) -> f32:
    x = f32(abs(f32(x_)))
    if x <= f32(1):
        return x * x * (f32(1.5) * x - f32(2.5)) + f32(1)
    if x < f32(2):
        return x * (x * (f32(-0.5) * x + f32(2.5)) - f32(4)) + f32(2)
    return f32(0)


def ref_warp(i0, i1, i1x, i1y, u1, u2):
    h, w = i0.shape
    outs = [np.zeros_like(i0) for _ in range(5)]
    tex = lambda img, cy, cx: img[min(max(cy, 0), h - 1), min(max(cx, 0), w - 1)]  # clamp addressing
    for y in range(h):
        for x in range(w):
            wx, wy = f32(x) + u1[y, x], f32(y) + u2[y, x]
            xmin, xmax = int(np.ceil(wx - f32(2))), int(np.floor(wx + f32(2)))
            ymin, ymax = int(np.ceil(wy - f32(2))), int(np.floor(wy + f32(2)))
            s = sx = sy = ws = f32(0)
            for cy in range(ymin, ymax + 1):
                for cx in range(xmin, xmax + 1):
                    wgt = ref_bicubic(wx - f32(cx)) * ref_bicubic(wy - f32(cy))
                    s = s + wgt * tex(i1, cy, cx)
                    sx = sx + wgt * tex(i1x, cy, cx)
                    sy = sy + wgt * tex(i1y, cy, cx)
                    ws = ws + wgt
            c = f32(1) / ws
            a, b, d = s * c, sx * c, sy * c
            outs[0][y, x], outs[1][y, x], outs[2][y, x] = a, b, d
            outs[3][y, x] = b * b + d * d
            outs[4][y, x] = a - b * u1[y, x] - d * u2[y, x] - i0[y, x]
    return outs


def ref_divergence(v1, v2, y, x):
    if x > 0 and y > 0:
        return (v1[y, x] - v1[y, x - 1]) + (v2[y, x] - v2[y - 1, x])
    if y > 0:
        return v1[y, 0] + v2[y, 0] - v2[y - 1, 0]
    if x > 0:
        return v1[0, x] - v1[0, x - 1] + v2[0, x]
    return v1[0, 0] + v2[0, 0]


def ref_estimate_u(i1wx, i1wy, grad, rho_c, p, u, l_t, theta, gamma):
    h, w = i1wx.shape
    l_t, theta, gamma = f32(l_t), f32(theta), f32(gamma)
    new = [np.zeros_like(i1wx) for _ in u]
    err = np.zeros_like(i1wx)
    for y in range(h):
        for x in range(w):
            u1o, u2o = u[0][y, x], u[1][y, x]
            u3o = u[2][y, x] if gamma else f32(0)
            rho = rho_c[y, x] + (i1wx[y, x] * u1o + i1wy[y, x] * u2o + gamma * u3o)
            d1 = d2 = d3 = f32(0)
            g = grad[y, x]
            if rho < -l_t * g:
                d1, d2, d3 = l_t * i1wx[y, x], l_t * i1wy[y, x], l_t * gamma
            elif rho > l_t * g:
                d1, d2, d3 = -l_t * i1wx[y, x], -l_t * i1wy[y, x], -l_t * gamma
            elif g > np.finfo(f32).eps:
                fi = -rho / g
                d1, d2, d3 = fi * i1wx[y, x], fi * i1wy[y, x], fi * gamma
            new[0][y, x] = (u1o + d1) + theta * ref_divergence(p[0], p[1], y, x)
            new[1][y, x] = (u2o + d2) + theta * ref_divergence(p[2], p[3], y, x)
            if gamma:
                new[2][y, x] = (u3o + d3) + theta * ref_divergence(p[4], p[5], y, x)
            err[y, x] = (u1o - new[0][y, x]) * (u1o - new[0][y, x]) + (u2o - new[1][y, x]) * (u2o - new[1][y, x])
    return new, err


def ref_dual(u, p, taut):
    h, w = u[0].shape
    taut = f32(taut)
    out = [q.copy() for q in p]
    for k, uk in enumerate(u):
        for y in range(h):
            for x in range(w):
                ux = uk[y, min(x + 1, w - 1)] - uk[y, x]
                uy = uk[min(y + 1, h - 1), x] - uk[y, x]
                ng = f32(1) + taut * f32(np.hypot(ux, uy))
                out[2 * k][y, x] = (p[2 * k][y, x] + taut * ux) / ng
                out[2 * k + 1][y, x] = (p[2 * k + 1][y, x] + taut * uy) / ng
    return out


# ------------------------------------------------------------- (a) each kernel against its transcription
@pytest.mark.parametrize("shape,size,step", [((H, W), (7, 9), 1.25), ((7, 9), (H, W), None), ((16, 16), (13, 13), 1.25)])
def test_resize_linear_equals_the_cuda_kernel_transcription(shape, size, step) -> None:
    src = _rand(1, h=shape[0], w=shape[1])
    fy = step if step else float(f32(1.0 / (size[0] / shape[0])))
    fx = step if step else float(f32(1.0 / (size[1] / shape[1])))
    got = cv.resize_linear(_t(src), *size, fy, fx)[0].numpy()
    np.testing.assert_array_equal(got, ref_resize_linear(src, *size, fy, fx))


def test_cuda_pyramid_resize_has_no_half_pixel_offset() -> None:
    """cuda::resize samples source ``d * 1.25`` (pixel 1 -> 1.25), cv::resize ``(d + .5) * 1.25 - .5``
    (pixel 1 -> 1.375): on a horizontal ramp the two differ by 0.125 per unit slope."""
    ramp = np.tile(np.arange(W, dtype=f32), (H, 1))
    got = cv.resize_linear(_t(ramp), 7, 9, 1.25, 1.25)[0].numpy()
    np.testing.assert_array_equal(got[0], np.arange(9, dtype=f32) * f32(1.25))


def test_centered_gradient_equals_the_cuda_kernel_transcription() -> None:
    src = _rand(2)
    dx, dy = cv.centered_gradient(_t(src))
    rx, ry = ref_centered_gradient(src)
    np.testing.assert_array_equal(dx[0].numpy(), rx)
    np.testing.assert_array_equal(dy[0].numpy(), ry)


def _flow(seed: int, spread: float) -> tuple:
    rng = np.random.default_rng(seed)
    u1 = rng.normal(0, spread, (H, W)).astype(f32)
    u2 = rng.normal(0, spread, (H, W)).astype(f32)
    u1[0, :4] = [0, 1, -2, 3.5]  # whole and half positions; u2 = 0 there
    u2[0, :4] = 0
    u1[-1, -2:] = [4.0, 7.3]  # beyond the right edge: clamped texels
    return u1, u2


@pytest.mark.parametrize("spread", [0.7, 3.0])
def test_warp_backward_equals_the_cuda_kernel_transcription(spread: float) -> None:
    i0, i1 = _rand(3), _rand(4)
    i1x, i1y = ref_centered_gradient(i1)
    u1, u2 = _flow(5, spread)
    got = cv.warp_backward(*_t(i0, i1, i1x, i1y, u1, u2))
    for g, r in zip(got, ref_warp(i0, i1, i1x, i1y, u1, u2)):
        np.testing.assert_array_equal(g[0].numpy(), r)


@pytest.mark.parametrize("gamma", [0.0, 0.2])
def test_estimate_u_equals_the_cuda_kernel_transcription(gamma: float) -> None:
    i1wx, i1wy = _rand(6, 40) - f32(20), _rand(7, 40) - f32(20)
    i1wx[0, 0] = i1wy[0, 0] = 0  # grad 0: no thresholding step
    grad = i1wx * i1wx + i1wy * i1wy
    rho_c = _rand(8, 600) - f32(300)
    u = [_rand(9 + k, 4) - f32(2) for k in range(3 if gamma else 2)]
    # magnitudes 1e-3 .. 1e4 mixed, so that the divergence's operation order shows in the rounding
    mag = (10.0 ** np.random.default_rng(19).uniform(-3, 4, (6, H, W))).astype(f32)
    p = [(_rand(20 + k, 2) - f32(1)) * mag[k] for k in range(6 if gamma else 4)]
    l_t, theta, g = float(f32(0.15 * 0.3)), float(f32(0.3)), float(f32(gamma))
    new, diff = cv.estimate_u(_t(i1wx, i1wy, grad, rho_c), [_t(a) for a in u], [_t(a) for a in p], l_t, theta, g)
    ref_new, ref_err = ref_estimate_u(i1wx, i1wy, grad, rho_c, p, u, l_t, theta, g)
    for a, b in zip(new, ref_new):
        np.testing.assert_array_equal(a[0].numpy(), b)
    np.testing.assert_array_equal(diff[0].numpy(), ref_err)


def test_estimate_dual_variables_equals_the_cuda_kernel_transcription() -> None:
    u = [_rand(30 + k, 6) - f32(3) for k in range(2)]
    p = [_rand(40 + k, 2) - f32(1) for k in range(4)]
    taut = float(f32(0.25 / 0.3))
    got = cv.estimate_dual_variables([_t(a) for a in u], [_t(a) for a in p], taut)
    # torch.hypot and numpy's hypot may round differently (CUDA's hypotf is within 3 ulp anyway)
    for a, b in zip(got, ref_dual(u, p, taut)):
        np.testing.assert_allclose(a[0].numpy(), b, rtol=3e-7, atol=1e-7)


# ------------------------------------------------------------- (b) the warp's weights by hand
def test_bicubic_weights_are_catmull_rom_worked_by_hand() -> None:
    # offset 0.25: taps at distances 1.25, 0.25, 0.75, 1.75 (A = -0.5); OpenCV's CPU remap (A = -0.75)
    # gives -0.10546875, 0.87890625, 0.26171875, -0.03515625
    x = torch.tensor([1.25, 0.25, -0.75, -1.75, 0.5, 1.5, 0.0, 1.0, 2.0, -2.0, 2.5])
    want = [-0.0703125, 0.8671875, 0.2265625, -0.0234375, 0.5625, -0.0625, 1.0, 0.0, 0.0, 0.0, 0.0]
    assert cv.bicubic_coeff(x).tolist() == want


def test_warp_of_an_impulse_gives_the_weights_and_edges_repeat() -> None:
    i1 = np.zeros((H, W), f32)
    i1[4, 5] = 1.0
    u1 = np.full((H, W), 0.25, f32)
    zero = np.zeros((H, W), f32)
    i1w = cv.warp_backward(*_t(zero, i1, zero, zero, u1, zero))[0][0].numpy()
    # x + 0.25 reads column 5 with weight bicubic(x + 0.25 - 5)
    np.testing.assert_array_equal(i1w[4, 3:7], [-0.0234375, 0.2265625, 0.8671875, -0.0703125])
    assert (i1w[4, :3] == 0).all() and (i1w[4, 7:] == 0).all() and (np.delete(i1w, 4, 0) == 0).all()
    # clamp addressing: a constant image warps to itself even 3 pixels outside (remap's border gives 0)
    const = np.full((H, W), 7.0, f32)
    out = cv.warp_backward(*_t(const, const, zero, zero, np.full((H, W), -3.4, f32), zero))
    np.testing.assert_allclose(out[0][0].numpy(), 7.0, rtol=1e-6)


# ------------------------------------------------------------- (c) whole algorithm on known motion
MOTIONS = [dict(shift=(1.3, -0.6)), dict(angle_deg=2.0), dict(shift=(0.4, 0.7), angle_deg=-1.5, zoom=0.98)]


def _epe(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sqrt(((a.astype(np.float64) - b) ** 2).sum(-1))


@pytest.fixture(scope="module")
def known_motion():
    pairs = [textured_pair(48, 64, seed=k, **m) for k, m in enumerate(MOTIONS)]
    frames = torch.from_numpy(np.stack([f for f, _ in pairs]))
    truth = np.stack([t for _, t in pairs])
    return frames, truth, tvl1_cuda_flow_batch(frames[:, 0], frames[:, 1]).numpy()


def test_known_motion_error_to_truth_is_small_and_comparable_to_the_cpu_algorithm(known_motion) -> None:
    from i3d_convert.flow.tvl1_torch import tvl1_flow_batch

    frames, truth, cuda = known_motion
    cpu = tvl1_flow_batch(frames[:, 0], frames[:, 1]).numpy()
    inner = (slice(None), slice(8, -8), slice(8, -8))  # the border has no true correspondence
    e_cuda = _epe(cuda[inner], truth[inner]).mean(axis=(1, 2))
    e_cpu = _epe(cpu[inner], truth[inner]).mean(axis=(1, 2))
    # measured (48x64): CUDA variant 0.012-0.014 px, CPU variant 0.031-0.044 px
    assert (e_cuda < 0.06).all() and (e_cuda < 1.5 * e_cpu).all(), (e_cuda, e_cpu)


# ------------------------------------------------------------- (d) batching
def test_batch_gives_the_same_flow_as_single_pairs(known_motion) -> None:
    """Each pair keeps its own error/prevError: a batch (with a constant pair that stops at once) equals
    the pairs one at a time, bit for bit."""
    frames, _, _ = known_motion
    const = torch.full((1, 2, 48, 64), 90, dtype=torch.uint8)
    batch = torch.cat([frames[:2], const])
    p = TVL1CudaParams(nscales=2, warps=2, iterations=60)
    both = tvl1_cuda_flow_batch(batch[:, 0], batch[:, 1], p)
    for k in range(3):
        assert torch.equal(both[k], tvl1_cuda_flow_batch(batch[k:k + 1, 0], batch[k:k + 1, 1], p)[0])


def _host_loop_iterations(sums, epsilon: float, scaled_eps: float, iterations: int) -> int:
    """tvl1flow.cpp procOneScale's loop, transcribed: how many estimateU calls one warp makes."""
    error, prev_error, n = float("inf"), 0.0, 0
    while error > scaled_eps and n < iterations:
        calc = epsilon > 0 and (n & 1) and prev_error < scaled_eps
        if calc:
            error = prev_error = sums(n)
        else:
            error = float("inf")
            prev_error -= scaled_eps
        n += 1
    return n


@pytest.mark.parametrize("epsilon,iterations", [(0.01, 300), (0.0, 17), (1e3, 50)])
def test_stopping_rule_is_the_host_loops(monkeypatch, epsilon: float, iterations: int) -> None:
    """The update is summed on odd iterations once the last sum, lowered by scaledEpsilon per
    iteration, is below it: with sums of 20 scaledEpsilon until iteration 30 and 0.5 after, the
    warp stops after iteration 45, 46 in all (summing every odd iteration: 32); epsilon 0 never sums."""
    h, w = 24, 32
    scaled_eps = epsilon * epsilon * h * w
    level = lambda n: 20.0 if n < 30 else 0.5
    calls = []
    real = cv.estimate_u

    def fake_sums(*args, **kwargs):
        new, diff = real(*args, **kwargs)
        value = level(len(calls)) * epsilon * epsilon
        calls.append(1)
        return new, torch.full_like(diff, value)

    monkeypatch.setattr(cv, "estimate_u", fake_sums)
    frames = torch.from_numpy(textured_pair(h, w, shift=(0.5, 0.2), seed=3)[0])
    tvl1_cuda_flow_batch(frames[:1], frames[1:], TVL1CudaParams(nscales=1, warps=1, epsilon=epsilon, iterations=iterations))
    expected = _host_loop_iterations(lambda n: level(n) * scaled_eps, epsilon, scaled_eps, iterations)
    assert len(calls) == expected
    assert expected == {0.01: 46, 0.0: 17, 1e3: 46}[epsilon]


# ------------------------------------------------------------- (e) edge cases
def test_constant_frames_give_zero_flow() -> None:
    x = torch.full((1, 24, 30), 77, dtype=torch.uint8)
    assert (tvl1_cuda_flow_batch(x, x) == 0).all()


@pytest.mark.parametrize("h,w,levels", [(16, 16, 1), (20, 20, 2), (19, 40, 1), (37, 53, 4)])
def test_pyramid_stops_before_a_side_below_16(h: int, w: int, levels: int) -> None:
    assert len(cv.pyramid_sizes(h, w, TVL1CudaParams())) == levels


@pytest.mark.parametrize("h,w", [(16, 16), (17, 29), (23, 16), (5, 7)])
def test_small_odd_and_non_square_sizes_give_finite_flow(h: int, w: int) -> None:
    frames, truth = textured_pair(h, w, shift=(0.6, -0.4), seed=h)
    t = torch.from_numpy(frames)
    flow = tvl1_cuda_flow_batch(t[:1], t[1:])[0].numpy()
    assert flow.shape == (h, w, 2) and np.isfinite(flow).all()
    if min(h, w) >= 16:
        assert _epe(flow, truth).mean() < 0.3  # measured 0.034-0.124 px, borders included


def test_float_input_is_scaled_by_255() -> None:
    frames, _ = textured_pair(24, 32, shift=(0.5, 0.0), seed=7)
    p = TVL1CudaParams(nscales=2, warps=2, iterations=40)
    as_u8 = torch.from_numpy(frames)
    as_float = as_u8.float() / 255.0
    np.testing.assert_allclose(tvl1_cuda_flow_batch(as_float[:1], as_float[1:], p).numpy(),
                               tvl1_cuda_flow_batch(as_u8[:1], as_u8[1:], p).numpy(), atol=1e-4)


def test_cpu_defaults_map_onto_the_cuda_defaults() -> None:
    assert TVL1CudaParams.from_cpu(TVL1Params()) == TVL1CudaParams()
    assert TVL1CudaParams.from_cpu(TVL1Params(inner_iterations=7, outer_iterations=3)).iterations == 21


# ------------------------------------------------------------- (f) selection and refusals
def test_opencv_backend_refuses_the_cuda_algorithm_in_one_line() -> None:
    from i3d_convert.flow.backends import tvl1_flow

    frames = np.zeros((2, 16, 16), np.uint8)
    with pytest.raises(I3DConvertError, match="torch backend only") as info:
        tvl1_flow(frames, backend="opencv", algorithm="opencv-cuda")
    assert "\n" not in str(info.value)
    with pytest.raises(I3DConvertError, match="flow algorithm"):
        tvl1_flow(frames, backend="torch", algorithm="opencv-gpu")
    with pytest.raises(I3DConvertError, match="use_initial_flow"):
        tvl1_flow(frames, TVL1CudaParams(use_initial_flow=True), backend="torch")


def test_public_api_runs_the_cuda_algorithm_by_name_or_by_params() -> None:
    from i3d_convert.flow.backends import tvl1_flow

    a, _ = textured_pair(24, 32, shift=(0.6, 0.3), seed=12)
    frames = np.stack([a[0], a[1], np.roll(a[1], 1, axis=0)])
    p = TVL1CudaParams(nscales=2, warps=2, iterations=40)
    by_params = tvl1_flow(frames, p)  # the params' class names the algorithm; torch is the only backend
    t = torch.from_numpy(frames)
    direct = tvl1_cuda_flow_batch(t[:-1], t[1:], p).numpy()
    np.testing.assert_array_equal(by_params, direct)
    np.testing.assert_array_equal(tvl1_flow(frames, p, backend="torch", algorithm="opencv-cuda", batch_size=1), direct)
    cpu_p = TVL1Params(nscales=2, warps=2, inner_iterations=20, outer_iterations=2, median_filtering=1)
    np.testing.assert_array_equal(tvl1_flow(frames, cpu_p, backend="torch", algorithm="opencv-cuda"), direct)
    with pytest.raises(I3DConvertError, match="TVL1CudaParams"):
        tvl1_flow(frames, p, algorithm="opencv-cpu")


def test_feature_settings_keep_the_default_key_and_record_the_cuda_algorithm() -> None:
    from conftest import key_without_code_path
    from i3d_convert.dataset.recipe import FeatureSettings, flow_input

    default = FeatureSettings(stream="flow", flow_region="crop")
    # the keys main had before the algorithm existed (same settings, crop-first flow as then); only
    # the recorded code path (OpenCV's portable path, which changed the flows a little) is new
    assert default.describe()["tvl1_path"] == "opencv-portable"
    assert key_without_code_path(default) == "fae4a2dd494cbf3c8a964cdafe3cb0a10b77a023dbf813cf88e940dfb82c104a"
    # the torch backend had its own key (92314e12...); its flow now equals OpenCV's bit for bit, so one key
    assert FeatureSettings(stream="flow", flow_backend="torch", flow_region="crop").key() == default.key()
    cuda = FeatureSettings(stream="flow", flow_backend="torch", flow_algorithm="opencv-cuda")
    record = cuda.describe()
    assert record["flow_algorithm"] == "opencv-cuda" and record["flow"]["iterations"] == 300
    assert "median_filtering" not in record["flow"] and isinstance(cuda.flow, TVL1CudaParams)
    # the flow stream passes settings.flow on: its class selects the algorithm
    frames = np.repeat(textured_pair(24, 32, shift=(1.0, 0.0), seed=13)[0][..., None], 3, -1)
    t = torch.from_numpy(frames[..., 0])
    direct = np.clip(tvl1_cuda_flow_batch(t[:1], t[1:])[0].numpy(), -20, 20) / np.float32(20)
    np.testing.assert_array_equal(flow_input(frames, cuda.flow, cuda.flow_backend)[0], direct)
    with pytest.raises(I3DConvertError, match="torch backend only"):
        FeatureSettings(stream="flow", flow_backend="opencv", flow_algorithm="opencv-cuda")
    auto = FeatureSettings(stream="flow", flow_algorithm="opencv-cuda")  # auto: the torch backend, on any device
    assert auto.for_device(torch.device("cpu")).flow_backend == "torch"
    with pytest.raises(I3DConvertError, match="flow algorithm"):
        FeatureSettings(stream="flow", flow_backend="torch", flow_algorithm="cuda")


def test_cli_features_refuses_the_cuda_algorithm_on_the_opencv_backend(cli, tmp_path) -> None:
    code, _, err = cli("features", str(tmp_path / "missing.npy"), "-o", str(tmp_path / "o.npy"),
                       "--stream", "flow", "--flow-algorithm", "opencv-cuda", "--flow-backend", "opencv")
    assert code != 0 and "torch backend only" in err and "Traceback" not in err
    assert not (tmp_path / "o.npy").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device in this environment")
def test_cuda_device_flow_equals_cpu_flow() -> None:
    frames, _ = textured_pair(48, 64, shift=(0.8, 0.3), seed=9)
    t = torch.from_numpy(frames)
    cpu = tvl1_cuda_flow_batch(t[:1], t[1:]).numpy()
    gpu = tvl1_cuda_flow_batch(t[:1].cuda(), t[1:].cuda()).cpu().numpy()
    e = _epe(gpu[0], cpu[0])
    assert e.mean() < 1e-3 and np.percentile(e, 99.9) < 0.1  # same float32 steps; FMA/sum order may differ
