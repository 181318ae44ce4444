"""Read a video, animation or image folder as DeepMind's I3D input: ``decode(path, options) -> uint8 [T, H, W, 3]``.

Recipe (kinetics-i3d README): frames sampled at 25 fps; RGB resized, aspect
ratio kept, so that the shorter side is 256 (bilinear); centre 224 x 224 crop;
values rescaled to [-1, 1] (:func:`~i3d_convert.io.video_resize.to_model_range`).

Pipeline::

    demux + decode (PyAV; Pillow for GIF/APNG/WebP/still images; or a folder
    of images) -> frames with presentation times (exact seconds)
    -> resampling to ``fps`` (streaming, io.video_timing; dropped frames are
       never converted to RGB) -> RGB uint8 -> shorter side resized, centre
       crop (io.video_resize) -> np.ndarray [T, H, W, 3] uint8

PyAV and Pillow are imported only when a file needs them (the ``[video]``
extra). Every failure is a :class:`DecodeError` whose one-line message names
the file. See docs/video.md for the choices.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable, Iterator, List, Optional

import numpy as np

from i3d_convert.errors import I3DConvertError, PathLike
from i3d_convert.io.video_options import DecodeOptions
from i3d_convert.io.video_resize import resize_and_crop, to_model_range
from i3d_convert.io.video_timing import _as_fraction, _Resampler, resample_indices

__all__ = ["DecodeError", "DecodeOptions", "VideoInfo", "probe", "decode", "iter_frames",
           "resample_indices", "resize_and_crop", "to_model_range"]


# Files whose extension is listed here go through Pillow; everything else through PyAV.
_PIL_EXTS = {".gif", ".png", ".apng", ".webp", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
_IMAGE_DIR_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif"}
_GIF_DEFAULT_MS = 100  # browsers show a GIF frame with a 0 or missing duration for ~100 ms
_MAX_SIDE = 16384  # frames larger than this are refused ("too large")
_IMAGE_ERRORS = (OSError, ValueError, SyntaxError, EOFError)


class DecodeError(I3DConvertError):
    """Any failure to read a video. ``str(err)`` is one line: ``"<path>: <problem>"``."""

    def __init__(self, path: PathLike, problem: str) -> None:
        super().__init__(" ".join(str(problem).split()), path)  # sets .path and .problem


@dataclass(frozen=True)
class VideoInfo:
    """Result of :func:`probe`.

    frames: number of frames if the container states it (or it was counted), else None.
    fps: native frame rate (container's average rate; GIF: frames / total duration;
        image folder: ``image_folder_fps``), or None if unknown.
    width, height: frame size in pixels as displayed (after rotation), before any resizing.
    duration: seconds, or None if unknown.
    kind: ``"video"`` (PyAV), ``"image"`` (Pillow: GIF/APNG/WebP/still) or ``"folder"``.
    codec: decoder name (``"h264"``, ...) or image format (``"gif"``, ...).
    """

    frames: Optional[int]
    fps: Optional[float]
    width: int
    height: int
    duration: Optional[float]
    kind: str
    codec: str


def _natural_key(name: str) -> List[Any]:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def _short(e: BaseException) -> str:
    """A library exception's message on one line, at most 200 characters."""
    msg = getattr(e, "strerror", None) or str(e)
    return " ".join(str(msg).split())[:200]


def _import_av(path: str) -> Any:
    try:
        import av  # noqa: PLC0415  (lazy: Pillow-only inputs work without PyAV)
    except ImportError:
        raise DecodeError(path, 'reading this file needs PyAV: pip install "i3d-convert[video]"') from None
    return av


def _import_pil(path: str) -> Any:
    try:
        from PIL import Image  # noqa: PLC0415
    except ImportError:
        raise DecodeError(path, 'reading this file needs Pillow: pip install "i3d-convert[video]"') from None
    return Image


def _autorotate(rgb: np.ndarray, rotation: Optional[float]) -> np.ndarray:
    """Apply the display-matrix rotation like the ffmpeg CLI's autorotate.

    ``rotation`` is PyAV's ``VideoFrame.rotation``: degrees counter-clockwise
    (a portrait phone clip usually reads -90: shown rotated 90 degrees
    clockwise). Only multiples of 90 are applied, as ffmpeg does; flips are ignored.
    """
    if not rotation:
        return rgb
    k = int(round(float(rotation) / 90.0))
    if abs(float(rotation) - 90.0 * k) > 1.0 or k % 4 == 0:
        return rgb
    return np.ascontiguousarray(np.rot90(rgb, k=k % 4))


class _FrameSource:
    """A frame source: iterating yields ``(frame_object, pts)`` with pts in exact seconds, then sets ``end``
    (the last frame's pts + duration). A subclass's ``to_rgb(frame_object)`` converts a frame to
    ``[H, W, 3]`` uint8 RGB; it is called only for the frames that are emitted."""

    def __init__(self, path: str, options: DecodeOptions) -> None:
        self.path = path
        self.options = options
        self.end: Optional[Fraction] = None


class _AvSource(_FrameSource):
    """A video file through PyAV (``options.threads`` decoding threads)."""

    @staticmethod
    def to_rgb(frame: Any) -> np.ndarray:
        return _autorotate(frame.to_ndarray(format="rgb24"), frame.rotation)

    def __iter__(self) -> Iterator[tuple]:
        av = _import_av(self.path)
        with _open_av(av, self.path) as container:
            stream = container.streams.video[0]
            if stream.codec_context is None:
                raise DecodeError(self.path, "unsupported codec: no decoder available")
            stream.thread_type = "AUTO"
            stream.codec_context.thread_count = self.options.threads
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            default_dur = Fraction(1) / Fraction(rate) if rate else Fraction(1, 25)
            yield from self._timed_frames(av, container, stream, default_dur)

    def _timed_frames(self, av: Any, container: Any, stream: Any, default_dur: Fraction) -> Iterator[tuple]:
        time_base = stream.time_base or Fraction(1, 1)
        last_pts: Optional[Fraction] = None
        last_dur: Optional[Fraction] = None
        n = 0
        try:
            for frame in container.decode(stream):
                if frame.width > _MAX_SIDE or frame.height > _MAX_SIDE:
                    raise DecodeError(self.path, f"too large: {frame.width}x{frame.height} frames")
                tb = Fraction(frame.time_base or time_base)
                if frame.pts is not None:
                    pts = Fraction(frame.pts) * tb
                else:
                    pts = Fraction(0) if last_pts is None else last_pts + (last_dur or default_dur)
                if last_pts is not None and pts <= last_pts:
                    pts = last_pts + Fraction(1, 10**6)  # non-increasing pts (broken muxing): keep the order
                last_dur = Fraction(frame.duration) * tb if frame.duration else None
                last_pts = pts
                n += 1
                yield frame, pts
        except DecodeError:
            raise
        except (av.error.FFmpegError, ValueError, RuntimeError) as e:
            raise DecodeError(self.path, f"corrupt: decoding failed after {n} frames ({_short(e)})") from None
        if last_pts is None:
            raise DecodeError(self.path, "zero frames: no decodable video frames")
        self.end = last_pts + (last_dur or default_dur)


def _open_av(av: Any, path: str) -> Any:
    """An open PyAV container that has a video stream."""
    try:
        container = av.open(path, mode="r")
    except av.error.FFmpegError as e:
        raise DecodeError(path, f"not a video or corrupt: cannot open ({_short(e)})") from None
    if not container.streams.video:
        container.close()
        raise DecodeError(path, "not a video: no video stream")
    return container


class _PilSource(_FrameSource):
    """An animation or still image through Pillow; its frames are RGB arrays already. A still lasts
    one frame of ``options.image_folder_fps``."""

    to_rgb = staticmethod(np.asarray)

    def __iter__(self) -> Iterator[tuple]:
        image_module = _import_pil(self.path)
        from PIL import ImageSequence  # noqa: PLC0415

        with _open_image(image_module, self.path) as im:
            animated = getattr(im, "is_animated", False)
            t, n = Fraction(0), 0
            try:
                for frame in ImageSequence.Iterator(im):
                    rgb = np.asarray(frame.convert("RGB"))
                    if animated:
                        ms = frame.info.get("duration") or 0
                        duration = Fraction(ms if ms > 0 else _GIF_DEFAULT_MS) / 1000
                    else:
                        duration = 1 / _as_fraction(self.options.image_folder_fps)
                    n += 1
                    yield rgb, t
                    t += duration
            except _IMAGE_ERRORS as e:
                raise DecodeError(self.path, f"corrupt: image decoding failed after {n} frames ({_short(e)})") from None
            if n == 0:
                raise DecodeError(self.path, "zero frames")
            self.end = t


def _open_image(image_module: Any, path: str) -> Any:
    """An open Pillow image no larger than the size limit."""
    try:
        im = image_module.open(path)
    except _IMAGE_ERRORS as e:
        raise DecodeError(path, f"not a video or image, or corrupt ({_short(e)})") from None
    if im.width > _MAX_SIDE or im.height > _MAX_SIDE:
        im.close()
        raise DecodeError(path, f"too large: {im.width}x{im.height} frames")
    return im


class _FolderSource(_FrameSource):
    """A folder of image files, one frame each at ``options.image_folder_fps``; a file is read only when
    its frame is emitted."""

    @staticmethod
    def to_rgb(frame: "_LazyImage") -> np.ndarray:
        return frame.load()

    def files(self) -> List[str]:
        """The image files in natural sort order (``frame_2`` before ``frame_10``); none raises DecodeError."""
        names = [n for n in os.listdir(self.path)
                 if os.path.splitext(n)[1].lower() in _IMAGE_DIR_EXTS and not n.startswith(".")]
        if not names:
            raise DecodeError(self.path, "zero frames: folder has no image files")
        return [os.path.join(self.path, n) for n in sorted(names, key=_natural_key)]

    def __iter__(self) -> Iterator[tuple]:
        files, fps = self.files(), _as_fraction(self.options.image_folder_fps)
        for i, f in enumerate(files):
            yield _LazyImage(f), Fraction(i) / fps
        self.end = Fraction(len(files)) / fps


class _LazyImage:
    """An image file, read only when its frame is emitted."""

    def __init__(self, path: str) -> None:
        self.path = path

    def load(self) -> np.ndarray:
        with _open_image(_import_pil(self.path), self.path) as im:
            try:
                return np.asarray(im.convert("RGB"))
            except _IMAGE_ERRORS as e:
                raise DecodeError(self.path, f"corrupt image ({_short(e)})") from None


def _source(path: str, options: DecodeOptions) -> _FrameSource:
    if not os.path.exists(path):
        raise DecodeError(path, "file not found")
    if os.path.isdir(path):
        return _FolderSource(path, options)
    if os.path.getsize(path) == 0:
        raise DecodeError(path, "not a video: empty file")
    if os.path.splitext(path)[1].lower() in _PIL_EXTS:
        return _PilSource(path, options)
    return _AvSource(path, options)


class _FrameConverter:
    """Source frame -> output frame (RGB, resized, cropped, read-only); a repeated frame is converted once."""

    def __init__(self, source: Any, path: str, options: DecodeOptions) -> None:
        self.source, self.path, self.options = source, path, options
        self.last_in: Any = None
        self.last_out: Optional[np.ndarray] = None

    def __call__(self, frame: Any) -> np.ndarray:
        if frame is self.last_in and self.last_out is not None:
            return self.last_out
        options = self.options
        try:
            rgb = self.source.to_rgb(frame)
            if options.resize_mode == "deepmind" and options.resize_shorter is None and options.crop is not None:
                if options.crop > min(rgb.shape[:2]):
                    raise DecodeError(self.path, f"frame {rgb.shape[1]}x{rgb.shape[0]} is smaller than "
                                                 f"crop {options.crop}")
            out = resize_and_crop(rgb, options)
        except DecodeError:
            raise
        except Exception as e:  # noqa: BLE001  (a frame that cannot be converted is a corrupt file)
            problem = f"corrupt: frame conversion failed ({type(e).__name__}: {_short(e)})"
            raise DecodeError(self.path, problem) from None
        out.flags.writeable = False  # repeated frames share this array
        self.last_in, self.last_out = frame, out
        return out


def _resampled(source: Any, path: str, options: DecodeOptions) -> Iterator[Any]:
    """The source's frame objects at the output rate (not yet converted)."""
    resampler = _Resampler(None if options.fps is None else _as_fraction(options.fps), options.sampling)
    t0: Optional[Fraction] = None
    for frame, pts in source:
        if t0 is None:
            t0 = pts
        yield from resampler.push(frame, pts - t0)
    if t0 is None:
        raise DecodeError(path, "zero frames")
    assert source.end is not None
    yield from resampler.finish(source.end - t0)


def iter_frames(path: PathLike, options: DecodeOptions = DecodeOptions(),
                wanted: Optional[Callable[[int], bool]] = None) -> Iterator[Optional[np.ndarray]]:
    """Yield the output frames of :func:`decode` one by one, each [H, W, 3] uint8 RGB.

    Streaming: holds at most the current and previous source frame plus one
    converted frame. Yielded arrays are read-only; a frame repeated by the
    resampler is the same array object. ``wanted(t)`` False: output frame ``t``
    is yielded as None, never converted to RGB nor resized (still decoded: the
    codec needs it). Raises :class:`DecodeError`.
    """
    path = os.fspath(path)
    source = _source(path, options)
    convert = _FrameConverter(source, path, options)
    nbytes = 0
    for count, frame in enumerate(_resampled(source, path, options), start=1):
        if wanted is not None and not wanted(count - 1):
            yield None
            if options.max_frames is not None and count >= options.max_frames:
                return
            continue
        out = convert(frame)
        nbytes += out.nbytes
        if nbytes > options.max_output_bytes:
            raise DecodeError(path, f"too large: output exceeds max_output_bytes={options.max_output_bytes}")
        yield out
        if options.max_frames is not None and count >= options.max_frames:
            return


def decode(path: PathLike, options: DecodeOptions = DecodeOptions()) -> np.ndarray:
    """Decode a video, animated image or image folder into model-ready frames.

    Returns np.ndarray [T, H, W, 3], dtype uint8, RGB, values 0..255
    (H = W = ``options.crop`` = 224 by default; native size with
    ``resize_mode="none"``). Use ``to_model_range`` for I3D's [-1, 1] float32
    input. Frames are resampled to ``options.fps`` by the rule
    ``options.sampling`` (:mod:`~i3d_convert.io.video_timing`). YUV -> RGB
    follows the frame's colour-matrix tag (BT.601 when untagged), limited
    range unless tagged full. Raises :class:`DecodeError` (one line naming
    the file) for missing, unsupported, corrupt, empty or too large input.
    """
    path = os.fspath(path)
    frames = list(iter_frames(path, options))
    if not frames:
        raise DecodeError(path, "zero frames after resampling")
    shapes = {f.shape for f in frames}
    if len(shapes) != 1:
        raise DecodeError(path, f"frame size changes within the video ({sorted(shapes)[:3]}); "
                                "use resize_mode='deepmind'")
    return np.stack(frames)


def probe(path: PathLike, image_folder_fps: float = 25.0) -> VideoInfo:
    """Read a file's metadata without a full decode (GIF/APNG frames are walked for their durations).

    Raises :class:`DecodeError` like :func:`decode`.
    """
    path = os.fspath(path)
    source = _source(path, DecodeOptions(image_folder_fps=image_folder_fps))
    if isinstance(source, _FolderSource):
        files = source.files()
        rgb = _LazyImage(files[0]).load()
        return VideoInfo(frames=len(files), fps=float(image_folder_fps), width=rgb.shape[1], height=rgb.shape[0],
                         duration=len(files) / float(image_folder_fps), kind="folder",
                         codec=os.path.splitext(files[0])[1].lstrip(".").lower())
    if isinstance(source, _PilSource):
        return _probe_image(path, image_folder_fps)
    return _probe_av(path)


def _probe_image(path: str, still_fps: float) -> VideoInfo:
    with _open_image(_import_pil(path), path) as im:
        width, height, image_format = im.width, im.height, (im.format or "").lower()
        try:
            n = int(getattr(im, "n_frames", 1))
            if getattr(im, "is_animated", False):
                ms = 0
                for i in range(n):
                    im.seek(i)
                    d = im.info.get("duration") or 0
                    ms += d if d > 0 else _GIF_DEFAULT_MS
                duration = ms / 1000
            else:
                duration = n / float(still_fps)
        except _IMAGE_ERRORS as e:
            raise DecodeError(path, f"not a video or image, or corrupt ({_short(e)})") from None
        fps = n / duration if duration > 0 else None
        return VideoInfo(n, fps, width, height, duration, "image", image_format)


def _probe_av(path: str) -> VideoInfo:
    av = _import_av(path)
    with _open_av(av, path) as container:
        s = container.streams.video[0]
        rate = s.average_rate or s.guessed_rate
        if s.duration is not None and s.time_base is not None:
            duration: Optional[float] = float(s.duration * s.time_base)
        else:
            duration = None if container.duration is None else container.duration / 1_000_000
        cc = s.codec_context
        try:  # the first frame gives the true size and the display rotation
            first = next(container.decode(s), None)
        except (av.error.FFmpegError, ValueError) as e:
            raise DecodeError(path, f"corrupt: cannot decode first frame ({_short(e)})") from None
        if first is None:
            raise DecodeError(path, "zero frames: no decodable video frames")
        width, height = first.width, first.height
        if first.rotation and int(round(float(first.rotation) / 90.0)) % 2:
            width, height = height, width
        return VideoInfo(
            frames=s.frames or None,  # 0 = not stated by the container (e.g. webm, mkv)
            fps=float(rate) if rate else None,
            width=width,
            height=height,
            duration=duration,
            kind="video",
            codec=cc.name if cc is not None else (s.codec.name if s.codec else "?"),
        )
