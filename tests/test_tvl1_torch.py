"""The PyTorch TV-L1 (i3d_convert/flow/ops.py, tvl1_torch.py) against OpenCV's own functions.

Building blocks are compared with ``cv2.resize``/``cv2.remap``/``cv2.medianBlur``; the stencils
private to tvl1flow.cpp with their definitions written out in numpy; the whole flow with
``cv2.optflow.DualTVL1OpticalFlow`` on a few small pairs (bench/flow.py measures all 78 GIF pairs).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from i3d_convert.flow import ops

cv2 = pytest.importorskip("cv2")


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))[None]


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((h, w)) * 255).astype(np.float32)


def _rel(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(got - ref).max() / np.abs(ref).max())


# ----------------------------------------------------------------- resize
@pytest.mark.parametrize("h,w", [(224, 224), (179, 143), (37, 53), (17, 16)])
def test_pyramid_downscale_matches_cv2_resize(h: int, w: int) -> None:
    img = _image(h, w)
    ref = cv2.resize(img, None, fx=0.8, fy=0.8, interpolation=cv2.INTER_LINEAR)
    size = ops.pyramid_size(h, w, 0.8)
    got = ops.resize_linear(_t(img), *size, inv_scale_y=0.8, inv_scale_x=0.8)[0].numpy()
    assert got.shape == ref.shape
    assert _rel(got, ref) < 1e-6  # measured: <= 1 ulp (3e-5 on 255)


@pytest.mark.parametrize("h,w,oh,ow", [(179, 179, 224, 224), (73, 91, 91, 114), (14, 13, 17, 16)])
def test_flow_upscale_matches_cv2_resize(h: int, w: int, oh: int, ow: int) -> None:
    img = _image(h, w, seed=1)
    ref = cv2.resize(img, (ow, oh))
    got = ops.resize_linear(_t(img), oh, ow)[0].numpy()
    # measured 8e-6 relative: OpenCV 5.1's multi-row path rounds the source coordinate
    # slightly differently (weights differ by <= 1e-5); the taps and clamping are the same.
    assert _rel(got, ref) < 2e-5


# ----------------------------------------------------------------- remap
def _maps(h: int, w: int, spread: float, seed: int = 2):
    rng = np.random.default_rng(seed)
    mx = (np.arange(w)[None, :] + rng.normal(0, spread, (h, w))).astype(np.float32)
    my = (np.arange(h)[:, None] + rng.normal(0, spread, (h, w))).astype(np.float32)
    return mx, my


@pytest.mark.parametrize("border,cv_border", [("constant", 0), ("replicate", 1)])
def test_remap_cubic_matches_cv2_remap_float_maps(border: str, cv_border: int) -> None:
    img = _image(60, 70)
    mx, my = _maps(60, 70, spread=4.0)  # many samples fall outside the image
    ref = cv2.remap(img, mx, my, cv2.INTER_CUBIC, borderMode=cv_border)
    got = ops.remap_cubic(_t(img), _t(mx), _t(my), border)[0].numpy()
    assert _rel(got, ref) < 2e-6  # measured 7e-7


@pytest.mark.parametrize("border,cv_border", [("constant", 0), ("replicate", 1)])
def test_remap_cubic_table_matches_cv2_fixed_point_maps(border: str, cv_border: int) -> None:
    img = _image(60, 70, seed=3)
    mx, my = _maps(60, 70, spread=4.0, seed=4)
    m1, m2 = cv2.convertMaps(mx, my, cv2.CV_16SC2)  # OpenCV's 1/32-pixel fixed point
    ref = cv2.remap(img, m1, m2, cv2.INTER_CUBIC, borderMode=cv_border)
    got = ops.remap_cubic(_t(img), _t(mx), _t(my), border, subpixel="table")[0].numpy()
    assert _rel(got, ref) < 1e-6  # measured 2e-7 (2 ulp)
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
    img = _image(41, 37, seed=6)
    np.testing.assert_array_equal(ops.median_blur(_t(img), ksize)[0].numpy(), cv2.medianBlur(img, ksize))


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
    p1 = np.pad(v1, ((0, 0), (1, 0)))
    p2 = np.pad(v2, ((1, 0), (0, 0)))
    np.testing.assert_allclose(div, (p1[:, 1:] - p1[:, :-1]) + (p2[1:] - p2[:-1]), atol=1e-4)
    # divergence is minus the adjoint of the forward gradient: <grad u, p> = -<u, div p>
    u = _image(6, 8, seed=11).astype(np.float64)
    ux, uy = (t[0].numpy().astype(np.float64) for t in ops.forward_gradient(_t(u.astype(np.float32))))
    v1[:, -1] = 0
    v2[-1] = 0
    div = ops.divergence(_t(v1), _t(v2))[0].numpy().astype(np.float64)
    assert abs((ux * v1 + uy * v2).sum() + (u * div).sum()) < 1e-3 * np.abs(u * div).sum()
