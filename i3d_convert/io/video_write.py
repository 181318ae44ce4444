"""Write small test videos (tests and benchmarks): every container the decoder reads, lossless or lossy.

Needs PyAV (``.mp4 .avi .mkv .webm .mov``) or Pillow (``.gif .png`` animations),
both in the ``[video]`` extra. The lossless settings give a bit-exact RGB round
trip through :func:`~i3d_convert.io.video_decode.decode` (verified with the
FFmpeg bundled in the av 18 wheel; see docs/video.md).
"""

from __future__ import annotations

import os
from fractions import Fraction
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np

from i3d_convert.errors import I3DConvertError
from i3d_convert.io.video_timing import _as_fraction

# container extension -> (codec, pixel format, codec options, lossless?)
_DEFAULT_CODECS: Dict[str, Tuple[str, str, Dict[str, str], bool]] = {
    ".mp4": ("libx264", "yuv420p", {"crf": "18", "preset": "ultrafast"}, False),
    ".avi": ("mpeg4", "yuv420p", {"qscale": "2"}, False),
    ".mkv": ("ffv1", "bgr0", {}, True),  # ffv1 with gbrp fails to open (EINVAL) in the av 18 wheel
    ".webm": ("libvpx-vp9", "yuv420p", {"crf": "20", "b": "0", "deadline": "realtime", "cpu-used": "8"}, False),
    ".mov": ("png", "rgb24", {}, True),
}
# codec -> (pixel format, options) for a bit-exact RGB round trip
_LOSSLESS: Dict[str, Tuple[str, Dict[str, str]]] = {
    "libx264rgb": ("rgb24", {"qp": "0", "preset": "ultrafast"}),
    "ffv1": ("bgr0", {}),
    "png": ("rgb24", {}),
    "ffvhuff": ("rgb24", {}),
    "utvideo": ("gbrp", {}),
    "qtrle": ("rgb24", {}),
    "libvpx-vp9": ("gbrp", {"lossless": "1", "deadline": "realtime", "cpu-used": "8"}),
}
_LOSSY: Dict[str, Tuple[str, Dict[str, str]]] = {
    "libx264": ("yuv420p", {"crf": "18", "preset": "ultrafast"}),
    "mpeg4": ("yuv420p", {"qscale": "2"}),
    "mjpeg": ("yuvj420p", {"qscale": "2"}),
    "libvpx-vp9": ("yuv420p", {"crf": "20", "b": "0", "deadline": "realtime", "cpu-used": "8"}),
    "libvpx": ("yuv420p", {"crf": "10", "b": "1M", "deadline": "realtime", "cpu-used": "8"}),
}
_CHECKED_CODECS = ("libx264", "libx264rgb", "mpeg4", "mjpeg", "ffv1", "png", "libvpx-vp9", "libvpx",
                   "ffvhuff", "utvideo", "qtrle")


def available_codecs(names: Sequence[str] = _CHECKED_CODECS) -> Dict[str, bool]:
    """Which of ``names`` the installed PyAV/FFmpeg can *encode*."""
    import av  # noqa: PLC0415  (lazy: PyAV is in the [video] extra)

    found = {}
    for name in names:
        try:
            av.codec.Codec(name, "w")
            found[name] = True
        except Exception:  # noqa: BLE001  (unknown codec names raise several types)
            found[name] = False
    return found


def _codec_setting(ext: str, codec: Optional[str], lossless: Optional[bool]) -> Tuple[str, str, Dict[str, str]]:
    """(codec, pixel format, options) for a container extension and the caller's choice."""
    if codec is None:
        if ext not in _DEFAULT_CODECS:
            raise I3DConvertError(f"path must end in one of {sorted(_DEFAULT_CODECS)} or .gif/.png/.apng, got {ext!r}")
        codec, pix_fmt, opts, is_lossless = _DEFAULT_CODECS[ext]
        if lossless and not is_lossless:
            raise I3DConvertError(f"the default codec for {ext} is lossy; pass a lossless codec")
        return codec, pix_fmt, opts
    table = _LOSSLESS if (lossless or (lossless is None and codec not in _LOSSY)) else _LOSSY
    if codec not in table:
        raise I3DConvertError(f"codec {codec!r} has no {'lossless' if table is _LOSSLESS else 'lossy'} setting here")
    pix_fmt, opts = table[codec]
    return codec, pix_fmt, opts


def _write_animation(path: str, frames: np.ndarray, fps: Union[float, Fraction], ext: str) -> str:
    from PIL import Image  # noqa: PLC0415

    images = [Image.fromarray(f) for f in frames]
    ms = int(round(1000 / float(fps)))
    extra = {"optimize": False, "disposal": 1} if ext == ".gif" else {}
    images[0].save(path, save_all=True, append_images=images[1:], duration=ms, loop=0, **extra)
    return ext.lstrip(".")


def write_test_video(
    path: Union[str, "os.PathLike[str]"],
    frames: np.ndarray,
    fps: Union[float, Fraction],
    codec: Optional[str] = None,
    lossless: Optional[bool] = None,
    pts: Optional[Sequence[int]] = None,
    rotation: int = 0,
) -> str:
    """Write frames [T, H, W, 3] uint8 RGB to ``path``; returns the codec used.

    Container from the extension: .mp4 .avi .mkv .webm .mov (PyAV) or .gif /
    .png / .apng (animated, Pillow; frame duration round(1000/fps) ms).
    ``codec`` None picks the container default (mp4: libx264, avi: mpeg4,
    mkv: ffv1, webm: libvpx-vp9, mov: png). ``lossless`` True uses the codec's
    lossless RGB setting (libx264rgb qp=0, ffv1 bgr0, utvideo gbrp,
    png/ffvhuff/qtrle rgb24, libvpx-vp9 lossless=1 gbrp). ``pts`` gives each
    frame's timestamp in units of 1/fps (variable frame rate). ``rotation``
    stores a display matrix (degrees counter-clockwise, as PyAV reports it).
    """
    path = os.fspath(path)
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise I3DConvertError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {list(frames.shape)}")
    ext = os.path.splitext(path)[1].lower()
    if ext in (".gif", ".png", ".apng"):
        return _write_animation(path, frames, fps, ext)
    codec, pix_fmt, opts = _codec_setting(ext, codec, lossless)
    import av  # noqa: PLC0415

    rate = _as_fraction(fps)
    with av.open(path, mode="w") as out:
        stream = out.add_stream(codec, rate=rate, options=dict(opts))
        stream.width, stream.height = int(frames.shape[2]), int(frames.shape[1])
        stream.pix_fmt = pix_fmt
        stream.time_base = stream.codec_context.time_base = 1 / rate
        if rotation:
            stream.set_display_rotation(rotation)
        for i, f in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
            frame.pts = int(pts[i]) if pts is not None else i
            frame.time_base = 1 / rate
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return codec
