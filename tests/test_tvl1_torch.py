"""The PyTorch TV-L1 (i3d_convert/flow/ops.py, tvl1_torch.py) against OpenCV's own functions, bit for bit.

The reference is OpenCV's portable code path (``cv2.setUseOptimized(False)``, which the ``opencv``
flow backend uses: :func:`i3d_convert.flow.tvl1.portable_opencv`). Building blocks are compared with
``cv2.resize``/``cv2.remap``/``cv2.medianBlur``; the stencils private to tvl1flow.cpp with their
definitions written out in numpy; the whole flow with ``cv2.optflow.DualTVL1OpticalFlow`` on GIF
pairs, generated motion and edge cases (bench/flow.py measures all 78 GIF pairs).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from i3d_convert.flow import ops

cv2 = pytest.importorskip("cv2")


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))[None]


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((h, w)) * 255).astype(np.float32)


@pytest.fixture
def portable():
    """OpenCV's portable path for the test (restored after)."""
    from i3d_convert.flow.tvl1 import portable_opencv

    with portable_opencv():
        yield


# ----------------------------------------------------------------- resize
@pytest.mark.parametrize("h,w", [(224, 224), (179, 143), (37, 53), (17, 16)])
def test_pyramid_downscale_equals_cv2_resize(h: int, w: int, portable) -> None:
    img = _image(h, w)
    ref = cv2.resize(img, None, fx=0.8, fy=0.8, interpolation=cv2.INTER_LINEAR)
    size = ops.pyramid_size(h, w, 0.8)
    got = ops.resize_linear(_t(img), *size, inv_scale_y=0.8, inv_scale_x=0.8)[0].numpy()
    np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("h,w,oh,ow", [(179, 179, 224, 224), (73, 91, 91, 114), (14, 13, 17, 16)])
def test_flow_upscale_equals_cv2_resize(h: int, w: int, oh: int, ow: int, portable) -> None:
    """Including the first and last rows, which OpenCV blends with the row itself (not clamped)."""
    img = (np.random.default_rng(1).standard_normal((h, w)) * 3).astype(np.float32)
    np.testing.assert_array_equal(ops.resize_linear(_t(img), oh, ow)[0].numpy(), cv2.resize(img, (ow, oh)))


# ----------------------------------------------------------------- remap
def _maps(h: int, w: int, spread: float, seed: int = 2):
    rng = np.random.default_rng(seed)
    mx = (np.arange(w)[None, :] + rng.normal(0, spread, (h, w))).astype(np.float32)
    my = (np.arange(h)[:, None] + rng.normal(0, spread, (h, w))).astype(np.float32)
    return mx, my


@pytest.mark.parametrize("border,cv_border", [("constant", 0), ("replicate", 1)])
def test_remap_cubic_equals_cv2_remap_float_maps(border: str, cv_border: int, portable) -> None:
    img = _image(60, 70)
    mx, my = _maps(60, 70, spread=4.0)  # many samples fall outside the image
    ref = cv2.remap(img, mx, my, cv2.INTER_CUBIC, borderMode=cv_border)
    np.testing.assert_array_equal(ops.remap_cubic(_t(img), _t(mx), _t(my), border)[0].numpy(), ref)


_CV_CPU_AVX2, _CV_CPU_FMA3 = 11, 12  # core/cvdef.h


@pytest.mark.skipif(not (cv2.checkHardwareSupport(_CV_CPU_AVX2) and cv2.checkHardwareSupport(_CV_CPU_FMA3)),
                    reason="OpenCV's fused remap kernel is its AVX2+FMA3 build; this CPU has neither")
def test_fused_remap_equals_cv2_optimized_avx2_remap() -> None:
    """OpenCV's default (optimized) remap is its AVX2 kernel with FMA: ``fused=True`` reproduces it,
    and differs from the portable result (so the two modes are really different)."""
    img = _image(60, 70, seed=21)
    mx, my = _maps(60, 70, spread=4.0, seed=22)
    assert cv2.useOptimized()
    ref = cv2.remap(img, mx, my, cv2.INTER_CUBIC)
    fused = ops.remap_cubic(_t(img), _t(mx), _t(my), fused=True)[0].numpy()
    np.testing.assert_array_equal(fused, ref)
    assert not np.array_equal(fused, ops.remap_cubic(_t(img), _t(mx), _t(my))[0].numpy())


@pytest.mark.parametrize("border,cv_border", [("constant", 0), ("replicate", 1)])
def test_remap_cubic_table_matches_cv2_fixed_point_maps(border: str, cv_border: int) -> None:
    img = _image(60, 70, seed=3)
    mx, my = _maps(60, 70, spread=4.0, seed=4)
    m1, m2 = cv2.convertMaps(mx, my, cv2.CV_16SC2)  # OpenCV's 1/32-pixel fixed point
    ref = cv2.remap(img, m1, m2, cv2.INTER_CUBIC, borderMode=cv_border)
    got = ops.remap_cubic(_t(img), _t(mx), _t(my), border, subpixel="table")[0].numpy()
    # OpenCV 5 computes fixed-point maps with its 8-bit fixed-point weights table; the float
    # table of OpenCV <= 4.10 that "table" reproduces agrees to 2e-7 relative (2 ulp)
    assert float(np.abs(got - ref).max() / np.abs(ref).max()) < 1e-6
    # and the table really quantises: 1/64-pixel shifts land on 32 distinct values per pixel
    xs = np.linspace(10, 11, 65, dtype=np.float32)[None].repeat(2, 0)
    ys = np.full_like(xs, 5.0)
    vals = ops.remap_cubic(_t(img), _t(xs), _t(ys), subpixel="table")[0, 0].numpy()
    assert len(np.unique(vals[:-1])) <= 33


def test_remap_cubic_identity_map_is_exact() -> None:
    img = _image(20, 30, seed=5)
    mx, my = np.meshgrid(np.arange(30, dtype=np.float32), np.arange(20, dtype=np.float32))
    for sub in ("float", "table"):
        got = ops.remap_cubic(_t(img), _t(mx), _t(my), subpixel=sub)[0].numpy()
        np.testing.assert_allclose(got, img, rtol=0, atol=1e-4)


# ----------------------------------------------------------------- median
@pytest.mark.parametrize("ksize", [3, 5])
def test_median_blur_matches_cv2(ksize: int) -> None:
    """The selection network of minima and maxima against OpenCV's median, on distinct values and
    on values with many ties."""
    img = _image(41, 37, seed=6)
    np.testing.assert_array_equal(ops.median_blur(_t(img), ksize)[0].numpy(), cv2.medianBlur(img, ksize))
    ties = np.round(img / 60).astype(np.float32)
    np.testing.assert_array_equal(ops.median_blur(_t(ties), ksize)[0].numpy(), cv2.medianBlur(ties, ksize))


# ----------------------------------------------------------------- tvl1flow.cpp stencils
def test_centered_gradient_stencil() -> None:
    img = _image(7, 9, seed=7)
    dx, dy = (t[0].numpy() for t in ops.centered_gradient(_t(img)))
    ex = np.empty_like(img)
    ex[:, 1:-1] = 0.5 * (img[:, 2:] - img[:, :-2])
    ex[:, 0] = 0.5 * (img[:, 1] - img[:, 0])
    ex[:, -1] = 0.5 * (img[:, -1] - img[:, -2])
    ey = np.empty_like(img)
    ey[1:-1] = 0.5 * (img[2:] - img[:-2])
    ey[0] = 0.5 * (img[1] - img[0])
    ey[-1] = 0.5 * (img[-1] - img[-2])
    np.testing.assert_array_equal(dx, ex)
    np.testing.assert_array_equal(dy, ey)
    # OpenCV's Sobel with ksize=1 and scale 0.5 is the same stencil inside the image
    np.testing.assert_allclose(dx[:, 1:-1], cv2.Sobel(img, cv2.CV_32F, 1, 0, ksize=1, scale=0.5)[:, 1:-1], atol=1e-4)


def test_forward_gradient_and_divergence_stencils() -> None:
    img = _image(6, 8, seed=8)
    dx, dy = (t[0].numpy() for t in ops.forward_gradient(_t(img)))
    assert (dx[:, -1] == 0).all() and (dy[-1] == 0).all()
    np.testing.assert_array_equal(dx[:, :-1], img[:, 1:] - img[:, :-1])
    np.testing.assert_array_equal(dy[:-1], img[1:] - img[:-1])
    v1, v2 = _image(6, 8, seed=9), _image(6, 8, seed=10)
    div = ops.divergence(_t(v1), _t(v2))[0].numpy()
    # tvl1flow.cpp's divergence, loop by loop, in its own association
    ref = np.empty_like(v1)
    ref[1:, 1:] = (v1[1:, 1:] - v1[1:, :-1]) + (v2[1:, 1:] - v2[:-1, 1:])
    ref[0, 1:] = (v1[0, 1:] - v1[0, :-1]) + v2[0, 1:]
    ref[1:, 0] = (v1[1:, 0] + v2[1:, 0]) - v2[:-1, 0]
    ref[0, 0] = v1[0, 0] + v2[0, 0]
    np.testing.assert_array_equal(div, ref)
    # divergence is minus the adjoint of the forward gradient: <grad u, p> = -<u, div p>
    u = _image(6, 8, seed=11).astype(np.float64)
    ux, uy = (t[0].numpy().astype(np.float64) for t in ops.forward_gradient(_t(u.astype(np.float32))))
    v1[:, -1] = 0
    v2[-1] = 0
    div = ops.divergence(_t(v1), _t(v2))[0].numpy().astype(np.float64)
    assert abs((ux * v1 + uy * v2).sum() + (u * div).sum()) < 1e-3 * np.abs(u * div).sum()


def test_stopping_rule_sums_in_float32_order() -> None:
    """The error is OpenCV's ``float error += term`` loop: decided exactly even where a float64 sum
    would fall on the other side of the threshold."""
    from i3d_convert.flow.tvl1_torch import _sum_exceeds

    terms = np.full((1, 1, 20000), 1e-4, np.float32)
    in_order = np.float32(0)
    for v in terms.ravel():
        in_order = np.float32(in_order + v)
    exact = float(terms.astype(np.float64).sum())
    assert in_order != np.float32(exact)  # the float32 loop really rounds differently
    threshold = (float(in_order) + exact) / 2  # between the two sums
    t = torch.from_numpy(terms)
    total = t.sum(dim=(1, 2), dtype=torch.float64)
    got = bool(_sum_exceeds(t, total, threshold)[0])
    assert got == bool(in_order > np.float32(threshold)) and got != (exact > threshold)
    far = bool(_sum_exceeds(t, total, 0.5 * exact)[0])  # decided without the loop
    assert far


# ----------------------------------------------------------------- whole flow vs cv2.optflow
from i3d_convert.flow import tvl1 as F  # noqa: E402
from i3d_convert.flow.synthetic import textured_pair  # noqa: E402
from i3d_convert.flow.tvl1_torch import pyramid_sizes, tvl1_flow_batch  # noqa: E402

needs_optflow = pytest.mark.skipif(not hasattr(cv2, "optflow"), reason="opencv-contrib (cv2.optflow) not installed")


def _torch_flow(frames: np.ndarray, params=None, **kw) -> np.ndarray:
    """Flow of consecutive pairs ``[T, H, W]`` -> ``[T-1, H, W, 2]``, all pairs in one batch."""
    t = torch.from_numpy(np.ascontiguousarray(frames))
    return tvl1_flow_batch(t[:-1], t[1:], params, **kw).numpy()


def _epe(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sqrt(((a.astype(np.float64) - b) ** 2).sum(-1))


MOTIONS = [dict(shift=(1.3, -0.6)), dict(angle_deg=2.0), dict(zoom=1.03),
           dict(shift=(0.4, 0.7), angle_deg=-1.5, zoom=0.98)]


@pytest.fixture(scope="module")
def synthetic_flows():
    pairs = [textured_pair(64, 80, seed=k, **m) for k, m in enumerate(MOTIONS)]
    frames = np.stack([f for f, _ in pairs])  # [4, 2, H, W]
    truth = np.stack([t for _, t in pairs])
    ours = tvl1_flow_batch(torch.from_numpy(frames[:, 0]), torch.from_numpy(frames[:, 1])).numpy()
    theirs = np.stack([F.tvl1_flow(f)[0] for f in frames]) if hasattr(cv2, "optflow") else None
    return frames, ours, theirs, truth


@needs_optflow
def test_synthetic_motion_flow_equals_opencv(synthetic_flows) -> None:
    _, ours, theirs, _ = synthetic_flows
    np.testing.assert_array_equal(ours, theirs)


def test_synthetic_motion_is_solved(synthetic_flows) -> None:
    """The generated pairs are solvable: the flow is within 0.1 px of the true motion inside the border."""
    _, ours, _, truth = synthetic_flows
    inner = (slice(None), slice(8, -8), slice(8, -8))  # the border has no true correspondence
    assert (_epe(ours[inner], truth[inner]).mean(axis=(1, 2)) < 0.1).all()


def _gif_gray(frames: int) -> np.ndarray:
    from PIL import Image, ImageSequence

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "kinetics-i3d", "v_CricketShot_g04_c01_rgb.gif")
    with Image.open(path) as im:
        rgb = np.stack([np.asarray(f.convert("RGB")) for i, f in zip(range(frames), ImageSequence.Iterator(im))])
    return F.to_gray(rgb)


@needs_optflow
def test_sample_gif_pairs_equal_opencv() -> None:
    gray = _gif_gray(3)  # 224x224, two pairs in one batch
    np.testing.assert_array_equal(_torch_flow(gray), F.tvl1_flow(gray))


@needs_optflow
def test_opencv_default_path_differs_from_its_portable_path() -> None:
    """Why the reference is the portable path: OpenCV's default build (IPP resize, FMA remap) gives
    another flow on the same pair (measured on the GIF: mean 0.010 px, p99.9 0.19 px)."""
    gray = _gif_gray(2)
    algo = F.TVL1Params().create()
    assert cv2.useOptimized()
    default = algo.calc(gray[0], gray[1], None)
    portable = F.tvl1_flow(gray)[0]
    assert cv2.useOptimized()  # the backend restored the process-wide flag
    if cv2.ipp.useIPP():  # without IPP the default path may coincide with the portable one
        assert not np.array_equal(default, portable)
    assert _epe(default, portable).mean() < 0.05


def test_batch_gives_the_same_flow_as_single_pairs() -> None:
    """Each pair keeps its own stopping rule: batching changes nothing."""
    a, _ = textured_pair(40, 48, shift=(0.7, 0.2), seed=5)
    b, _ = textured_pair(40, 48, angle_deg=3.0, seed=6)
    p = F.TVL1Params(nscales=3, warps=2)
    both = tvl1_flow_batch(torch.from_numpy(np.stack([a[0], b[0]])), torch.from_numpy(np.stack([a[1], b[1]])), p)
    np.testing.assert_array_equal(both[0].numpy(), _torch_flow(a, p)[0])
    np.testing.assert_array_equal(both[1].numpy(), _torch_flow(b, p)[0])


def test_float_input_is_scaled_by_255_as_opencv() -> None:
    a, _ = textured_pair(32, 40, shift=(0.5, 0.0), seed=7)
    p = F.TVL1Params(nscales=2, warps=2)
    as_float = torch.from_numpy(a.astype(np.float32) / np.float32(255))
    np.testing.assert_allclose(tvl1_flow_batch(as_float[:1], as_float[1:], p).numpy(), _torch_flow(a, p), atol=1e-4)


@needs_optflow
def test_constant_frames_give_zero_flow_as_opencv() -> None:
    frames = np.full((2, 24, 30), 77, np.uint8)
    ours = _torch_flow(frames)
    assert (ours == 0).all() and (F.tvl1_flow(frames) == 0).all()


@needs_optflow
@pytest.mark.parametrize("h,w,levels", [(16, 16, 1), (20, 20, 2), (37, 53, 4), (25, 61, 3)])
def test_small_odd_and_non_square_sizes_equal_opencv(h: int, w: int, levels: int) -> None:
    """The pyramid stops before a side below 16 pixels, as OpenCV's; odd / non-square sizes agree."""
    assert len(pyramid_sizes(h, w, F.TVL1Params())) == levels
    frames, _ = textured_pair(h, w, shift=(0.6, -0.4), seed=h)
    np.testing.assert_array_equal(_torch_flow(frames), F.tvl1_flow(frames))


@needs_optflow
def test_other_parameters_equal_opencv() -> None:
    """Not only the defaults: fewer scales and warps, median 3 and none, another lambda."""
    frames, _ = textured_pair(40, 52, shift=(0.9, 0.4), angle_deg=1.0, seed=15)
    for p in (F.TVL1Params(nscales=3, warps=3, median_filtering=3), F.TVL1Params(median_filtering=1, lambda_=0.3),
              F.TVL1Params(inner_iterations=5, outer_iterations=3, epsilon=0.05, scale_step=0.5)):
        np.testing.assert_array_equal(_torch_flow(frames, p), F.tvl1_flow(frames, p))


@needs_optflow
def test_compiled_iterations_equal_opencv() -> None:
    """``compile=True`` fuses the inner iteration and the median into compiled loops: the same bits
    (inductor must not contract multiply-adds or reorder the float32 operations). Compiles for about
    a minute."""
    frames, _ = textured_pair(40, 52, shift=(0.9, 0.4), angle_deg=1.0, seed=16)
    np.testing.assert_array_equal(_torch_flow(frames, compile=True), F.tvl1_flow(frames))


def test_unsupported_options_are_refused() -> None:
    from i3d_convert.errors import I3DConvertError

    x = torch.zeros(1, 16, 16, dtype=torch.uint8)
    for bad in (F.TVL1Params(gamma=0.1), F.TVL1Params(use_initial_flow=True), F.TVL1Params(median_filtering=7)):
        with pytest.raises(I3DConvertError):
            tvl1_flow_batch(x, x, bad)
    with pytest.raises(I3DConvertError):
        tvl1_flow_batch(x, x[:, :8])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device in this environment")
def test_cuda_flow_equals_cpu_flow() -> None:
    torch.backends.cuda.matmul.allow_tf32 = False
    frames, _ = textured_pair(48, 64, shift=(0.8, 0.3), seed=9)
    cpu = _torch_flow(frames)
    t = torch.from_numpy(frames).cuda()
    gpu = tvl1_flow_batch(t[:1], t[1:]).cpu().numpy()
    # every step is an IEEE float32 add, multiply, divide or square root (hypot in float64), each a
    # separate kernel (no fused multiply-add), and the stopping rule is decided exactly: bit-identical
    np.testing.assert_array_equal(gpu, cpu)


# ----------------------------------------------------------------- public API, recipe and CLI
def test_public_tvl1_flow_backends_agree_and_batching_changes_nothing() -> None:
    import i3d_convert

    a, _ = textured_pair(32, 40, shift=(0.6, 0.3), seed=12)
    b = np.roll(a[1], 1, axis=0)
    frames = np.stack([a[0], a[1], b])  # 3 frames: 2 pairs
    rgb = np.repeat(frames[..., None], 3, axis=-1)
    p = F.TVL1Params(nscales=2, warps=2)
    whole = i3d_convert.tvl1_flow(rgb, p, backend="torch", device="cpu")
    assert whole.shape == (2, 32, 40, 2) and whole.dtype == np.float32
    np.testing.assert_array_equal(i3d_convert.tvl1_flow(rgb, p, backend="torch", batch_size=1), whole)
    np.testing.assert_array_equal(i3d_convert.tvl1_flow(torch.from_numpy(frames), p, backend="torch"), whole)
    if hasattr(cv2, "optflow"):
        ref = i3d_convert.tvl1_flow(frames, p, backend="opencv")
        np.testing.assert_array_equal(ref, i3d_convert.tvl1_flow(frames, p))  # CPU default: OpenCV
        np.testing.assert_array_equal(whole, ref)


def test_backend_choice_and_bad_backend() -> None:
    from i3d_convert.errors import I3DConvertError
    from i3d_convert.flow.backends import default_backend, tvl1_flow

    assert default_backend("cpu") == "opencv" and default_backend(None) == "opencv"
    assert default_backend("cuda:0") == "torch"
    frames = np.zeros((2, 16, 16), np.uint8)
    with pytest.raises(I3DConvertError, match="flow backend"):
        tvl1_flow(frames, backend="cuda")
    with pytest.raises(I3DConvertError, match="at least 2 frames"):
        tvl1_flow(frames[:1], backend="torch")


def test_feature_settings_share_one_key_across_backends_and_resolve_auto_by_device() -> None:
    from i3d_convert.dataset.recipe import FeatureSettings, flow_input
    from i3d_convert.errors import I3DConvertError

    auto = FeatureSettings(stream="flow")
    opencv, torch_backend = (FeatureSettings(stream="flow", flow_backend=b) for b in ("opencv", "torch"))
    # the backends compute the same flow bits, so outputs made with one are current for the other
    assert auto.key() == opencv.key() == torch_backend.key() and "flow_backend" not in auto.describe()
    # outputs whose flow came from OpenCV's default path (before the portable path) are recomputed
    assert auto.describe()["tvl1_path"] == "opencv-portable"
    assert "tvl1_path" not in FeatureSettings(stream="rgb").describe()
    # auto: OpenCV on the CPU; on CUDA the torch port, on the model's device
    cpu, gpu = auto.for_device(torch.device("cpu")), auto.for_device(torch.device("cuda:1"))
    assert (cpu.flow_backend, cpu.flow_device) == ("opencv", None)
    assert (gpu.flow_backend, gpu.flow_device) == ("torch", "cuda:1") and gpu.key() == auto.key()
    assert opencv.for_device(torch.device("cuda:0")).flow_device is None  # OpenCV stays on the CPU
    assert torch_backend.for_device(torch.device("cpu")).flow_device is None
    assert FeatureSettings(stream="rgb").for_device(torch.device("cuda:0")).flow_backend == "auto"
    with pytest.raises(I3DConvertError, match="flow backend"):
        FeatureSettings(flow_backend="gpu")
    frames = np.repeat(np.stack([a for a in textured_pair(24, 32, shift=(1.0, 0.0), seed=13)[0]])[..., None], 3, -1)
    got = flow_input(frames, F.TVL1Params(nscales=1), "torch")
    assert got.shape == (1, 24, 32, 2) and np.abs(got).max() <= 1
    if hasattr(cv2, "optflow"):
        np.testing.assert_array_equal(got, flow_input(frames, F.TVL1Params(nscales=1), "opencv"))


def test_feature_settings_pass_device_and_compile_to_the_flow_without_changing_the_key(monkeypatch) -> None:
    from i3d_convert.dataset import recipe

    seen = {}

    def fake_flow(frames, params, **kw):
        seen.update(kw)
        return np.zeros((len(frames) - 1,) + frames.shape[1:3] + (2,), np.float32)

    monkeypatch.setattr(recipe, "tvl1_flow", fake_flow)
    settings = recipe.FeatureSettings(stream="flow", flow_backend="torch", flow_device="cuda:3", flow_compile=True,
                                      decode=recipe.DecodeOptions(crop=None))
    recipe.flow_fields(np.zeros((3, 16, 16, 3), np.uint8), settings)
    assert seen == {"backend": "torch", "device": "cuda:3", "compile": True}
    assert settings.key() == recipe.FeatureSettings(stream="flow", decode=recipe.DecodeOptions(crop=None)).key()
def test_cli_features_refuses_an_unknown_flow_backend(cli, tmp_path) -> None:
    code, out, err = cli("features", str(tmp_path / "missing.npy"), "-o", str(tmp_path / "o.npy"),
                         "--stream", "flow", "--flow-backend", "gpu", "--flow-compile")
    assert code != 0 and "flow backend" in err and "gpu" in err and "Traceback" not in err
    assert not (tmp_path / "o.npy").exists()


def test_cli_features_flow_stream_runs_the_torch_backend_end_to_end(cli, synthetic_checkpoint, tmp_path) -> None:
    """``features --stream flow --flow-backend torch`` on a folder: the torch flow reaches the model,
    and its features equal the OpenCV backend's (synthetic calibrated flow weights)."""
    from i3d_convert.conversion.tf_to_torch import convert_to_file
    from i3d_convert.dataset.features import extract_features
    from i3d_convert.dataset.recipe import flow_input
    from i3d_convert.io.video_decode import DecodeOptions, decode
    from i3d_convert.io.video_write import write_test_video
    from i3d_convert.verification.metrics import difference
    from i3d_convert.weights.factory import i3d

    base, _ = textured_pair(40, 60, seed=14)
    frames = np.stack([np.roll(base[0], (k // 3, k), axis=(0, 1)) for k in range(10)])
    (tmp_path / "videos").mkdir()
    write_test_video(tmp_path / "videos" / "clip.mp4", np.repeat(frames[..., None], 3, -1), fps=25)
    weights = tmp_path / "flow.safetensors"
    convert_to_file(synthetic_checkpoint("flow_imagenet"), weights)
    code, _, err = cli("features", str(tmp_path / "videos"), "-o", str(tmp_path / "out"), "--stream", "flow",
                       "--flow-backend", "torch", "--flow-weights", str(weights), "--resize", "0", "--crop", "32",
                       "--flow-region", "crop",
                       "--window", "9", "--device", "cpu", "--workers", "0", "--quiet")
    assert code == 0, err
    got = np.load(tmp_path / "out" / "clip.mp4.npy")
    decoded = decode(tmp_path / "videos" / "clip.mp4", DecodeOptions(fps=25, resize_shorter=None, crop=32))
    model = i3d("flow_imagenet", weights=str(weights))
    by_torch = extract_features(model, flow_input(decoded, F.TVL1Params(), "torch"), window=9).features
    assert difference(got, by_torch).rel_l2 <= 1e-6
    if hasattr(cv2, "optflow"):
        by_opencv = extract_features(model, flow_input(decoded, F.TVL1Params(), "opencv"), window=9).features
        np.testing.assert_array_equal(by_opencv, by_torch)  # the two backends' flows are the same bits


@needs_optflow
def test_cli_features_stream_both_with_either_backend_writes_the_same_features(cli, synthetic_checkpoint, tmp_path) -> None:
    """``features --stream both`` on a folder, the whole two-stream recipe (flow on the resized frame,
    then cropped): the torch backend's features are bit for bit the OpenCV backend's, and a rerun
    with the other backend finds them current (one settings key)."""
    import json

    from i3d_convert.conversion.tf_to_torch import convert_to_file
    from i3d_convert.io.video_write import write_test_video

    base, _ = textured_pair(48, 64, seed=17)
    frames = np.stack([np.roll(base[0], (k // 3, k), axis=(0, 1)) for k in range(10)])
    (tmp_path / "videos").mkdir()
    write_test_video(tmp_path / "videos" / "clip.mp4", np.repeat(frames[..., None], 3, -1), fps=25)
    weights = {}
    for release in ("rgb_imagenet", "flow_imagenet"):
        weights[release] = tmp_path / f"{release}.safetensors"
        convert_to_file(synthetic_checkpoint(release), weights[release])

    def run(backend: str, out: str):
        return cli("features", str(tmp_path / "videos"), "-o", str(tmp_path / out), "--stream", "both",
                   "--flow-backend", backend, "--weights", str(weights["rgb_imagenet"]),
                   "--flow-weights", str(weights["flow_imagenet"]), "--resize", "40", "--crop", "32",
                   "--window", "8", "--device", "cpu", "--workers", "0", "--no-flow-compile", "--quiet")

    for backend, out in (("torch", "by_torch"), ("opencv", "by_opencv")):
        code, _, err = run(backend, out)
        assert code == 0, err
    from safetensors.numpy import load_file

    got = {out: load_file(tmp_path / out / "clip.mp4.safetensors") for out in ("by_torch", "by_opencv")}
    assert sorted(got["by_torch"]) == sorted(got["by_opencv"]) == ["flow", "rgb"]
    for stream in ("rgb", "flow"):  # the same bits (safetensors orders its metadata at random)
        np.testing.assert_array_equal(got["by_torch"][stream], got["by_opencv"][stream])
    code, stdout, err = cli("features", str(tmp_path / "videos"), "-o", str(tmp_path / "by_torch"), "--stream",
                            "both", "--flow-backend", "opencv", "--weights", str(weights["rgb_imagenet"]),
                            "--flow-weights", str(weights["flow_imagenet"]), "--resize", "40", "--crop", "32",
                            "--window", "8", "--device", "cpu", "--workers", "0", "--json")
    assert code == 0, err
    record = json.loads(stdout)
    assert (record["computed"], record["skipped"]) == (0, 1)  # current: nothing recomputed
