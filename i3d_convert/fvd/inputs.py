"""FVD inputs: arrays of videos or folders/manifests of video files, their value range, and clip sampling.

Every video reaches the network as ``[T, H, W, 3]`` on the [0, 255] scale. Arrays
(``.npy``/``.npz``, ``[N, T, H, W, 3]``) are uint8 ([0, 255]) or float with a declared
range (``"0-255"``, ``"0-1"``, ``"-1-1"``) or one detected from the values; float values that
fit several ranges (all within [0, 1]) are an error asking for the range. Video files are
decoded with :mod:`i3d_convert.io.video_decode` at their native frame rate and resolution.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from i3d_convert.errors import I3DConvertError, PathLike

from .protocols import MIN_FRAMES

ARRAY_SUFFIXES = (".npy", ".npz")
#: Declarable value ranges and the map of each onto [0, 255].
INPUT_RANGES = {"0-255": (0.0, 255.0), "0-1": (0.0, 1.0), "-1-1": (-1.0, 1.0)}
CLIP_MODES = ("first", "random", "all")


def detect_range(videos: np.ndarray, where: str = "videos") -> str:
    """The value range of ``videos``: uint8 is ``0-255``; floats by their values (ambiguous -> error)."""
    if videos.dtype == np.uint8:
        return "0-255"
    if videos.dtype.kind not in "fiu":
        raise I3DConvertError(f"{where}: unsupported dtype {videos.dtype}")
    low, high = float(videos.min()), float(videos.max())
    if not (np.isfinite(low) and np.isfinite(high)):
        raise I3DConvertError(f"{where}: values contain NaN or inf")
    if low >= 0.0 and high > 1.0 and high <= 255.0:
        return "0-255"
    if low < 0.0 and low >= -1.0 and high <= 1.0:
        return "-1-1"
    if low >= 0.0 and high <= 1.0:
        raise I3DConvertError(f"{where}: values in [{low:g}, {high:g}] fit [0, 1], [-1, 1] and [0, 255]; "
                              "pass {arg}='0-1', '-1-1' or '0-255'", argument="input_range")
    raise I3DConvertError(f"{where}: values in [{low:g}, {high:g}] fit none of [0, 255], [0, 1], [-1, 1]")


def to_0_255(videos: np.ndarray, input_range: Optional[str], where: str = "videos") -> np.ndarray:
    """``videos`` on the [0, 255] scale (uint8 kept as is, floats as float32); range checked."""
    videos = np.asarray(videos)
    detected = detect_range(videos, where) if input_range is None else input_range
    if detected not in INPUT_RANGES:
        raise I3DConvertError(f"unknown input_range {detected!r}; choose one of {', '.join(INPUT_RANGES)}")
    low, high = INPUT_RANGES[detected]
    if videos.dtype == np.uint8 and detected == "0-255":
        return videos
    if videos.size and (float(videos.min()) < low or float(videos.max()) > high):
        raise I3DConvertError(f"{where}: values in [{float(videos.min()):g}, {float(videos.max()):g}] "
                              f"are outside the declared input_range {detected}")
    x = videos.astype(np.float32)
    if detected == "0-1":
        return x * np.float32(255.0)
    if detected == "-1-1":
        return (x + np.float32(1.0)) * np.float32(127.5)
    return x


def check_videos(videos: np.ndarray, where: str = "videos") -> np.ndarray:
    if videos.ndim != 5 or videos.shape[-1] != 3:
        raise I3DConvertError(f"{where}: expected videos [N, T, H, W, 3], got shape {list(videos.shape)}")
    return videos


def load_array(path: PathLike) -> np.ndarray:
    """``[N, T, H, W, 3]`` from ``.npy`` (memory-mapped) or ``.npz`` (key ``videos`` or its only array)."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".npy":
            return check_videos(np.load(path, mmap_mode="r", allow_pickle=False), str(path))
        with np.load(path, allow_pickle=False) as data:
            keys = ["videos"] if "videos" in data.files else data.files
            if len(keys) != 1:
                raise I3DConvertError(f"holds arrays {data.files}; name the videos 'videos'", path)
            return check_videos(data[keys[0]], str(path))
    except (OSError, ValueError) as exc:
        raise I3DConvertError(f"cannot read the videos ({' '.join(str(exc).split())})", path) from None


@dataclass(frozen=True)
class ClipOptions:
    """Which frames of each video become FVD samples.

    frames: clip length (``None``: the whole video, one sample). clip: ``first`` (frames
    ``0..frames-1``), ``random`` (one clip at a random offset, reproducible from ``seed`` and the
    video's index) or ``all`` (every non-overlapping clip). num_videos: the first N videos only.
    """

    frames: Optional[int] = None
    clip: str = "first"
    seed: int = 0
    num_videos: Optional[int] = None

    def __post_init__(self) -> None:
        if self.clip not in CLIP_MODES:
            raise I3DConvertError(f"{{arg}} must be one of {', '.join(CLIP_MODES)}, got {self.clip!r}", argument="clip")
        if self.frames is not None and self.frames < 1:
            raise I3DConvertError(f"{{arg}} must be >= 1, got {self.frames}", argument="frames")
        if self.num_videos is not None and self.num_videos < 1:
            raise I3DConvertError(f"{{arg}} must be >= 1, got {self.num_videos}", argument="num_videos")


def select_clips(video: np.ndarray, index: int, options: ClipOptions, where: str) -> np.ndarray:
    """``[T, H, W, 3]`` -> ``[K, frames, H, W, 3]``: this video's clips under ``options``."""
    total = video.shape[0]
    length = total if options.frames is None else options.frames
    if total < length:
        raise I3DConvertError(f"{where}: has {total} frames, fewer than frames={length}")
    if length < MIN_FRAMES:
        raise I3DConvertError(f"{where}: clips of {length} frames; the FVD network needs at least {MIN_FRAMES}")
    if options.clip == "all":
        return np.stack([video[s:s + length] for s in range(0, total - length + 1, length)])
    start = 0
    if options.clip == "random":
        start = int(np.random.default_rng([options.seed, index]).integers(0, total - length + 1))
    return np.asarray(video[start:start + length])[np.newaxis]


class VideoSet:
    """An indexable set of videos: ``len(s)``, ``s.read(i) -> [T, H, W, 3]``, ``s.name(i)``, ``s.content_sha256()``."""

    def __init__(self, source: PathLike, input_range: Optional[str] = None) -> None:
        self.source = Path(source)
        self.input_range = input_range
        self._array: Optional[np.ndarray] = None
        self._files: List = []
        if self.source.is_file() and self.source.suffix.lower() in ARRAY_SUFFIXES:
            array = load_array(self.source)
            self.input_range = input_range or detect_range(np.asarray(array), str(self.source))
            self._array = array
        else:
            from i3d_convert.dataset.sources import list_sources

            if input_range not in (None, "0-255"):
                raise I3DConvertError(f"video files are decoded to uint8 [0, 255]; {{arg}}={input_range!r} "
                                      "applies only to arrays", self.source, argument="input_range")
            self._files = list_sources(self.source)

    def __len__(self) -> int:
        return len(self._array) if self._array is not None else len(self._files)

    def name(self, index: int) -> str:
        return f"{self.source.name}[{index}]" if self._array is not None else str(self._files[index].path)

    def read(self, index: int, max_frames: Optional[int] = None) -> np.ndarray:
        """Video ``index`` as ``[T, H, W, 3]`` on [0, 255] (uint8 or float32)."""
        if self._array is not None:
            return to_0_255(np.asarray(self._array[index]), self.input_range, self.name(index))
        from i3d_convert.io.video_decode import DecodeOptions, decode

        options = DecodeOptions(fps=None, resize_mode="none", max_frames=max_frames)
        return decode(self._files[index].path, options)

    def content_sha256(self, count: int) -> str:
        """sha256 of the first ``count`` videos' bytes (array file, or each file's name and contents)."""
        digest = hashlib.sha256()
        if self._array is not None:
            array = self._array[:count]
            digest.update(f"{array.dtype.str}:{list(array.shape)}:{self.input_range}\0".encode())
            for video in array:
                digest.update(np.ascontiguousarray(video).tobytes())
            return digest.hexdigest()
        for source in self._files[:count]:
            files: Sequence[Path] = sorted(source.path.iterdir()) if source.path.is_dir() else [source.path]
            for path in files:
                digest.update(f"{source.relative}/{path.name}\0".encode())
                with open(path, "rb") as handle:
                    for block in iter(lambda: handle.read(1 << 20), b""):
                        digest.update(block)
        return digest.hexdigest()


def video_resolution(clips: np.ndarray) -> Tuple[int, int]:
    return int(clips.shape[-3]), int(clips.shape[-2])


__all__ = ["ARRAY_SUFFIXES", "INPUT_RANGES", "CLIP_MODES", "ClipOptions", "VideoSet", "detect_range", "to_0_255",
           "load_array", "select_clips", "check_videos"]
