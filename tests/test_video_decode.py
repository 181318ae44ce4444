"""Videos, animations and image folders decode to the I3D recipe's frames: FFmpeg's fps-filter timing,
shorter side 256 + centre 224 crop, exact pixels for lossless codecs, one-line errors naming the file."""

from __future__ import annotations

import os
import re
import wave
from fractions import Fraction

import numpy as np
import pytest

av = pytest.importorskip("av")  # the [video] extra
Image = pytest.importorskip("PIL.Image")

from i3d_convert.errors import I3DConvertError  # noqa: E402
from i3d_convert.io import video_decode  # noqa: E402
from i3d_convert.io.video_decode import DecodeError, DecodeOptions, decode, probe  # noqa: E402
from i3d_convert.io.video_resize import _linear_resize, _target_size, resize_and_crop, to_model_range  # noqa: E402
from i3d_convert.io.video_timing import resample_indices  # noqa: E402
from i3d_convert.io.video_write import write_test_video  # noqa: E402

W, H = 320, 180  # non-square, non-224 source
# Expected geometry, computed by hand for 320x180 -> shorter side 256:
# 320 * 256 / 180 = 455.11 -> 455 wide; crop offsets ((455-224)//2, (256-224)//2) = (115, 16)
RW, RH, X0, Y0 = 455, 256, 115, 16

# Index bits: 8 bars inside the region that survives the centre crop.
BAR_X, BAR_W, BAR_Y0, BAR_Y1 = 88, 18, 24, 96


def make_frames(n: int, noise: bool, w: int = W, h: int = H, seed: int = 0) -> np.ndarray:
    """Frames whose index (0..255) is written as 8 black/white bars; rest is texture."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    out = np.empty((n, h, w, 3), np.uint8)
    for i in range(n):
        if noise:
            f = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        else:  # smooth, moving gradient (friendly to lossy codecs)
            base = (xx * 255 // max(w - 1, 1) + 3 * i) % 256
            f = np.stack([base, (yy * 255 // max(h - 1, 1)).astype(np.int64), 255 - base], -1).astype(np.uint8)
        f[BAR_Y0 - 4 : BAR_Y1 + 4, BAR_X - 4 : BAR_X + 8 * BAR_W + 4] = 128
        for b in range(8):
            f[BAR_Y0:BAR_Y1, BAR_X + b * BAR_W : BAR_X + (b + 1) * BAR_W] = 255 if (i >> b) & 1 else 0
        out[i] = f
    return out


def index_native(frame: np.ndarray) -> int:
    yc = (BAR_Y0 + BAR_Y1) // 2
    return sum(
        (1 << b) for b in range(8) if frame[yc - 4 : yc + 4, BAR_X + b * BAR_W + 6 : BAR_X + b * BAR_W + 12].mean() > 128
    )


def index_cropped(frame: np.ndarray) -> int:
    """Read the bars from a 224x224 output frame (map bar centres through resize+crop)."""
    sx, sy = RW / W, RH / H
    yc = int(((BAR_Y0 + BAR_Y1) / 2) * sy) - Y0
    v = 0
    for b in range(8):
        xc = int((BAR_X + b * BAR_W + BAR_W / 2) * sx) - X0
        if frame[yc - 5 : yc + 5, xc - 5 : xc + 5].mean() > 128:
            v |= 1 << b
    return v


def ffmpeg_expected(n_src: int, src_fps: Fraction, out_fps: Fraction) -> list[int]:
    """Independent statement of the fps-filter rule for constant-rate input.

    Frame i sits at tick round_half_up(i*out/src); tick n shows the last frame whose tick is
    <= n, i.e. the last i with i*out/src < n + 1/2; ticks run while n < round(duration*out).
    """
    dur = Fraction(n_src) / src_fps
    n_out = int(dur * out_fps + Fraction(1, 2))
    return [max(i for i in range(n_src) if Fraction(i) / src_fps * out_fps < n + Fraction(1, 2)) for n in range(n_out)]


def pil_reference(frame: np.ndarray) -> np.ndarray:
    r = np.asarray(Image.fromarray(frame).resize((RW, RH), Image.Resampling.BILINEAR))
    return r[Y0 : Y0 + 224, X0 : X0 + 224]


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("dec"))


@pytest.fixture(scope="module")
def noise_frames() -> np.ndarray:
    return make_frames(60, noise=True)  # 2 s at 30 fps


@pytest.fixture(scope="module")
def lossless_mkv(tmp: str, noise_frames: np.ndarray) -> str:
    p = os.path.join(tmp, "noise_ffv1.mkv")
    write_test_video(p, noise_frames, 30)  # mkv default = ffv1 (lossless)
    return p


# ----------------------------------------------------------------- core recipe


def test_expected_rule_sanity() -> None:
    # hand-computed 30 -> 25 pattern: every 6th source frame (3, 9, 15, ...) is dropped
    exp = ffmpeg_expected(60, Fraction(30), Fraction(25))
    assert len(exp) == 50
    assert exp[:12] == [0, 1, 2, 4, 5, 6, 7, 8, 10, 11, 12, 13]
    assert exp[-1] == 59


def test_30fps_to_25fps_lossless_exact(lossless_mkv: str, noise_frames: np.ndarray) -> None:
    out = decode(lossless_mkv)  # defaults: 25 fps, shorter side 256, centre crop 224
    assert out.shape == (50, 224, 224, 3) and out.dtype == np.uint8
    exp = ffmpeg_expected(60, Fraction(30), Fraction(25))
    assert [index_cropped(f) for f in out] == exp
    for n, i in enumerate(exp):
        np.testing.assert_array_equal(out[n], pil_reference(noise_frames[i]), err_msg=f"output {n} / source {i}")


def test_native_fps_returns_every_frame(lossless_mkv: str, noise_frames: np.ndarray) -> None:
    out = decode(lossless_mkv, DecodeOptions(fps=None, resize_mode="none"))
    assert out.shape == (60, H, W, 3)
    np.testing.assert_array_equal(out, noise_frames)
    assert [index_native(f) for f in out] == list(range(60))


def test_max_frames_and_dropped_frames_not_converted(lossless_mkv: str, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    orig = video_decode._AvSource.to_rgb
    monkeypatch.setattr(video_decode._AvSource, "to_rgb", staticmethod(lambda f: calls.append(f.pts) or orig(f)))
    out = decode(lossless_mkv, DecodeOptions(max_frames=7))
    assert out.shape == (7, 224, 224, 3)
    assert [index_cropped(f) for f in out] == ffmpeg_expected(60, Fraction(30), Fraction(25))[:7]
    calls.clear()
    decode(lossless_mkv)
    assert len(calls) == 50  # 60 decoded, 10 dropped without RGB conversion


def test_resample_matches_libavfilter_fps_filter() -> None:
    """decode's rule == the fps filter (default round=near) of the FFmpeg inside PyAV."""

    def libavfilter(pts: list[int], durs: list[int], tb: Fraction, rate: str) -> list[int]:
        g = av.filter.Graph()
        src = g.add_buffer(width=4, height=2, format="gray", time_base=tb)
        fps = g.add("fps", f"fps={rate}")
        sink = g.add("buffersink")
        src.link_to(fps)
        fps.link_to(sink)
        g.configure()
        got: list[int] = []

        def drain() -> None:
            while True:
                try:
                    fr = g.pull()
                except (av.error.BlockingIOError, av.error.EOFError, EOFError):
                    return
                a = fr.to_ndarray()
                got.append(int(a[0, 0]) + 256 * int(a[0, 1]))

        for i, (p, d) in enumerate(zip(pts, durs)):
            a = np.zeros((2, 4), np.uint8)
            a[0, 0], a[0, 1] = i % 256, i // 256
            f = av.VideoFrame.from_ndarray(a, format="gray")
            f.pts, f.time_base, f.duration = p, tb, d
            g.push(f)
            drain()
        g.push(None)
        drain()
        return got

    rng = np.random.default_rng(1)
    cases = []
    for src_rate, n, out in [
        (Fraction(30), 60, "25"),
        (Fraction(30000, 1001), 95, "25"),
        (Fraction(24), 50, "25"),
        (Fraction(60), 70, "25"),
        (Fraction(15), 31, "25"),
        (Fraction(25), 40, "25"),
        (Fraction(50), 41, "25"),
        (Fraction(12), 23, "25"),
        (Fraction(30), 45, "30000/1001"),
        (Fraction(25), 33, "10"),
    ]:
        tb = 1 / src_rate
        cases.append((list(range(n)), [1] * n, tb, out))
    for _ in range(4):  # variable frame rate, millisecond time base
        d = rng.integers(5, 90, 80).tolist()
        pts = np.concatenate([[0], np.cumsum(d[:-1])]).tolist()
        cases.append((pts, d, Fraction(1, 1000), "25"))
    for pts, durs, tb, out in cases:
        ref = libavfilter(pts, durs, tb, out)
        mine = resample_indices([p * tb for p in pts], (pts[-1] + durs[-1]) * tb, Fraction(out), "ffmpeg")
        assert mine == ref, (tb, out, pts[:5])


def test_mediapipe_sampling() -> None:
    def ref(n_src: int, src: Fraction, out: Fraction) -> list[int]:
        # PacketResamplerCalculatorOptions doc: "The closest packet in time in each period will
        # be chosen. If there is no packet in the period then the most recent packet".
        t = [Fraction(i) / src for i in range(n_src)]
        per = [int(x * out + Fraction(1, 2)) for x in t]
        res = []
        for n in range(per[-1] + 1):
            target = Fraction(n) / out
            cand = [i for i in range(n_src) if per[i] == n]
            if cand:
                before = [i for i in range(n_src) if t[i] < target]
                pool = cand + before[-1:]
                res.append(min(pool, key=lambda i: (abs(t[i] - target), -i)))
            else:
                res.append(max(i for i in range(n_src) if t[i] <= target))
        return res

    for src, n in [(Fraction(30), 60), (Fraction(60), 50), (Fraction(12), 24), (Fraction(30000, 1001), 90)]:
        got = resample_indices([Fraction(i) / src for i in range(n)], Fraction(n) / src, 25, "mediapipe")
        assert got == ref(n, src, Fraction(25)), src
    # hand-checked cases
    assert resample_indices([i / 60 for i in range(13)], 13 / 60, 25, "mediapipe")[:6] == [0, 2, 5, 7, 10, 12]
    assert resample_indices([i / 12 for i in range(4)], 4 / 12, 25, "mediapipe")[:3] == [0, 0, 1]
    # for 30 -> 25 both rules agree
    pts = [Fraction(i, 30) for i in range(60)]
    assert resample_indices(pts, 2, 25, "mediapipe") == resample_indices(pts, 2, 25, "ffmpeg")


# ---------------------------------------------------------------- other inputs


def test_gif(tmp: str) -> None:
    frames = make_frames(20, noise=False)
    frames[:, BAR_Y1 + 4 :] = 40  # few colours: GIF palette is then exact
    frames[:, : BAR_Y0 - 4] = 200
    p = os.path.join(tmp, "anim.gif")
    write_test_video(p, frames, 20)  # 50 ms per frame
    info = probe(p)
    assert (info.frames, info.width, info.height, info.kind) == (20, W, H, "image")
    assert info.fps == pytest.approx(20.0) and info.duration == pytest.approx(1.0)
    out = decode(p)
    assert out.shape == (25, 224, 224, 3)
    assert [index_cropped(f) for f in out] == ffmpeg_expected(20, Fraction(20), Fraction(25))
    native = decode(p, DecodeOptions(fps=None, resize_mode="none"))
    assert [index_native(f) for f in native] == list(range(20))


def test_image_folder(tmp: str, monkeypatch: pytest.MonkeyPatch) -> None:
    d = os.path.join(tmp, "folder")
    os.makedirs(d)
    frames = make_frames(12, noise=True, seed=3)
    for i, f in enumerate(frames):  # unpadded names: natural sort must put frame_10 after frame_9
        Image.fromarray(f).save(os.path.join(d, f"frame_{i + 1}.png"))
    open(os.path.join(d, "notes.txt"), "w").close()
    info = probe(d, image_folder_fps=10)
    assert (info.frames, info.fps, info.width, info.height, info.kind) == (12, 10.0, W, H, "folder")
    loads = []
    orig = video_decode._FolderSource.to_rgb
    monkeypatch.setattr(video_decode._FolderSource, "to_rgb", staticmethod(lambda f: loads.append(f.path) or orig(f)))
    out = decode(d, DecodeOptions(image_folder_fps=10))
    assert len(loads) == 12  # 10 -> 25 fps repeats frames; each image is read and resized once
    exp = ffmpeg_expected(12, Fraction(10), Fraction(25))
    assert out.shape == (len(exp), 224, 224, 3) == (30, 224, 224, 3)
    assert [index_cropped(f) for f in out] == exp
    np.testing.assert_array_equal(out[-1], pil_reference(frames[11]))
    native = decode(d, DecodeOptions(fps=None, resize_mode="none"))
    np.testing.assert_array_equal(native, frames)
    assert decode(d).shape[0] == 12  # default folder rate 25 -> 25 fps: identity


CONTAINERS = [  # (file, codec or None = container default, lossless)
    ("h264.mp4", None, False),
    ("h264rgb.mp4", "libx264rgb", True),
    ("mpeg4.avi", None, False),
    ("mjpeg.avi", "mjpeg", False),
    ("ffv1.mkv", None, True),
    ("vp9.webm", None, False),
    ("png.mov", None, True),
    ("apng.png", None, True),
]


@pytest.mark.parametrize("name,codec,lossless", CONTAINERS, ids=[c[0] for c in CONTAINERS])
def test_every_container_decodes(tmp: str, name: str, codec: str | None, lossless: bool) -> None:
    frames = make_frames(30, noise=False, seed=5)
    p = os.path.join(tmp, name)
    write_test_video(p, frames, 30, codec=codec, lossless=lossless or None)
    info = probe(p)
    assert (info.width, info.height) == (W, H)
    native = decode(p, DecodeOptions(fps=None, resize_mode="none"))
    assert [index_native(f) for f in native] == list(range(30))
    if lossless:
        np.testing.assert_array_equal(native, frames)
    else:
        assert np.abs(native.astype(int) - frames).mean() < 8
    if name.endswith(".png"):  # APNG stores 33 ms per frame -> not exactly 30 fps
        return
    assert info.fps == pytest.approx(30.0)
    out = decode(p)
    assert out.shape == (25, 224, 224, 3)
    assert [index_cropped(f) for f in out] == ffmpeg_expected(30, Fraction(30), Fraction(25))


def test_probe_mp4(tmp: str) -> None:
    p = os.path.join(tmp, "probe.mp4")
    write_test_video(p, make_frames(60, noise=False), 30)
    info = probe(p)
    assert (info.frames, info.width, info.height, info.kind, info.codec) == (60, W, H, "video", "h264")
    assert info.fps == pytest.approx(30.0) and info.duration == pytest.approx(2.0)


# -------------------------------------------------------------------- errors


def _assert_decode_error(path: str, *words: str) -> DecodeError:
    with pytest.raises(DecodeError) as ei:
        decode(path)
    err = ei.value
    msg = str(err)
    assert path in msg and "\n" not in msg, msg
    for w in words:
        assert w in msg, msg
    assert err.__cause__ is None and (err.__context__ is None or err.__suppress_context__), "exception chain leaked"
    return err


def test_errors(tmp: str) -> None:
    rng = np.random.default_rng(7)
    rand = os.path.join(tmp, "random.mp4")
    with open(rand, "wb") as f:
        f.write(rng.integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    _assert_decode_error(rand, "not a video")

    good = os.path.join(tmp, "good.mp4")
    write_test_video(good, make_frames(30, noise=False), 30)
    data = open(good, "rb").read()
    trunc = os.path.join(tmp, "truncated.mp4")
    with open(trunc, "wb") as f:
        f.write(data[: len(data) // 2])
    _assert_decode_error(trunc)
    with pytest.raises(DecodeError, match="truncated.mp4"):
        probe(trunc)

    _assert_decode_error(os.path.join(tmp, "missing.mp4"), "not found")
    empty = os.path.join(tmp, "empty.avi")
    open(empty, "wb").close()
    _assert_decode_error(empty, "empty")
    badgif = os.path.join(tmp, "bad.gif")
    with open(badgif, "wb") as f:
        f.write(b"GIF89a" + rng.integers(0, 256, 300, dtype=np.uint8).tobytes())
    _assert_decode_error(badgif)
    os.makedirs(os.path.join(tmp, "nothing"))
    _assert_decode_error(os.path.join(tmp, "nothing"), "zero frames")

    audio = os.path.join(tmp, "audio_only.mkv")  # WAV content: opens fine, has no video stream
    with wave.open(audio, "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(8000)
        w.writeframes(b"\0\0" * 800)
    _assert_decode_error(audio, "no video stream")

    with pytest.raises(DecodeError, match="too large"):
        decode(good, DecodeOptions(max_output_bytes=224 * 224 * 3 * 5))


# ------------------------------------------------------------ spatial / range


def test_resize_and_crop_geometry_portrait_and_pil() -> None:
    rng = np.random.default_rng(11)
    img = rng.integers(0, 256, (321, 200, 3), dtype=np.uint8)  # portrait, odd height
    out = resize_and_crop(img)
    # 321 * 256 / 200 = 410.88 -> 411 high; crop offsets ((256-224)//2, (411-224)//2) = (16, 93)
    ref = np.asarray(Image.fromarray(img).resize((256, 411), Image.Resampling.BILINEAR))[93 : 93 + 224, 16 : 16 + 224]
    np.testing.assert_array_equal(out, ref)
    land = rng.integers(0, 256, (200, 335, 3), dtype=np.uint8)
    # 335 * 256 / 200 = 428.8 -> 429 wide (rounded, not floored); offsets ((429-224)//2, 16) = (102, 16)
    ref = np.asarray(Image.fromarray(land).resize((429, 256), Image.Resampling.BILINEAR))[16 : 16 + 224, 102 : 102 + 224]
    np.testing.assert_array_equal(resize_and_crop(land), ref)
    assert resize_and_crop(img, DecodeOptions(resize_mode="none")) is img
    assert resize_and_crop(img, DecodeOptions(crop=None)).shape == (411, 256, 3)


def test_linear_resize_matches_torch() -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(12)
    for h, w in [(180, 320), (720, 1280), (240, 320)]:
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        nw, nh = _target_size(w, h, 256)
        mine = _linear_resize(img, nw, nh).astype(int)
        t = torch.from_numpy(img).permute(2, 0, 1)[None].double()
        ref = torch.nn.functional.interpolate(t, size=(nh, nw), mode="bilinear", align_corners=False, antialias=False)
        ref = ref[0].permute(1, 2, 0).round().clamp(0, 255).numpy().astype(int)
        assert np.abs(mine - ref).max() <= 1 and (mine != ref).mean() < 1e-3


def test_to_model_range() -> None:
    x = np.array([0, 127, 128, 255], np.uint8)
    y = to_model_range(x)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, [-1.0, 127 / 127.5 - 1, 128 / 127.5 - 1, 1.0], atol=1e-7)


def test_display_rotation_applied_like_ffmpeg_cli(tmp: str) -> None:
    frames = make_frames(6, noise=True, seed=9)
    p = os.path.join(tmp, "portrait_phone.mp4")
    # a portrait phone clip: stored landscape, display matrix -90 deg (ccw) = "rotate 90 clockwise"
    write_test_video(p, frames, 30, codec="libx264rgb", lossless=True, rotation=-90)
    info = probe(p)
    assert (info.width, info.height) == (H, W)
    out = decode(p, DecodeOptions(fps=None, resize_mode="none"))
    assert out.shape == (6, W, H, 3)
    # clockwise: the stored top-left pixel ends up top-right
    np.testing.assert_array_equal(out[:, 0, -1], frames[:, 0, 0])
    np.testing.assert_array_equal(out, np.rot90(frames, k=-1, axes=(1, 2)))


def test_linear_crop_shortcut_is_exact() -> None:
    rng = np.random.default_rng(13)
    for h, w in [(180, 320), (321, 200), (720, 1280)]:
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        nw, nh = _target_size(w, h, 256)
        full = _linear_resize(img, nw, nh)
        y0, x0 = (nh - 224) // 2, (nw - 224) // 2
        got = resize_and_crop(img, DecodeOptions(resize_method="linear"))
        np.testing.assert_array_equal(got, full[y0 : y0 + 224, x0 : x0 + 224])


def test_decode_error_is_the_package_error_with_path_and_problem(tmp: str) -> None:
    missing = os.path.join(tmp, "nowhere.mp4")
    with pytest.raises(I3DConvertError) as ei:
        decode(missing)
    err = ei.value
    assert isinstance(err, DecodeError)
    assert (err.path, err.problem, str(err)) == (missing, "file not found", f"{missing}: file not found")
    assert str(DecodeError("a.mp4", "bad\n  header")) == "a.mp4: bad header"  # always one line


@pytest.mark.parametrize("kwargs,words", [
    ({"fps": 0}, "fps must be > 0 or None, got 0"),
    ({"sampling": "nearest"}, "sampling must be one of"),
    ({"resize_method": "bicubic"}, "resize_method must be one of"),
    ({"crop": 0}, "crop must be a positive int or None, got 0"),
    ({"crop": 300}, "crop must be <= resize_shorter, got crop=300, resize_shorter=256"),
    ({"image_folder_fps": -1}, "image_folder_fps must be > 0, got -1"),
    ({"max_output_bytes": 0}, "max_output_bytes must be a positive int, got 0"),
])
def test_bad_decode_options_name_the_argument(kwargs: dict, words: str) -> None:
    with pytest.raises(I3DConvertError, match=re.escape(words)):
        DecodeOptions(**kwargs)
