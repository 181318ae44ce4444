"""DeepMind's input recipe for one video: decoded frames -> the RGB and/or TV-L1 flow clip.

RGB: frames at 25 fps, shorter side resized to 256 (bilinear), centre 224x224 crop, values
``u8 / 127.5 - 1`` in [-1, 1]. Flow: the same frames in grayscale, TV-L1 (OpenCV) from frame
``t`` to ``t + 1``, truncated to [-20, 20] and divided by 20, channels (x, y). ``T`` frames give
``T - 1`` flow fields, so the flow stream has ``T - 1`` frames; with both streams the RGB stream
uses frames ``0 .. T-2`` too, as DeepMind's sample does (79 RGB frames and the 79 flows between
80 decoded frames), so both have the same windows. docs/features.md has the details.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from i3d_convert.errors import I3DConvertError
from i3d_convert.flow.backends import BACKENDS, tvl1_flow
from i3d_convert.flow.tvl1 import TVL1Params, flow_to_input
from i3d_convert.dataset.sources import VideoSource
from i3d_convert.io.video_decode import DecodeError, DecodeOptions, decode

STREAMS = ("rgb", "flow", "both")


def _json_value(name: str, value):
    """Settings as JSON values that compare equal however they were given (fps 25 == 25.0)."""
    if name == "fps" and value is not None:
        return float(value)
    return value if value is None or isinstance(value, (bool, int, float, str)) else str(value)


@dataclass(frozen=True)
class FeatureSettings:
    """Everything that decides a video's features (recorded in the manifest; a change recomputes).

    ``decode``: frame rate, resize and crop; ``flow``: the TV-L1 parameters; ``flow_backend``:
    ``opencv`` (the reference) or ``torch`` (the PyTorch port, on the CPU of the decoding worker).
    """

    stream: str = "rgb"
    endpoint: str = "pool"
    window: int = 64
    stride: Optional[int] = None
    batch_size: int = 4
    decode: DecodeOptions = field(default_factory=DecodeOptions)
    flow: TVL1Params = field(default_factory=TVL1Params)
    flow_backend: str = "opencv"

    def __post_init__(self) -> None:
        from i3d_convert.dataset.features import FEATURE_ENDPOINTS

        if self.endpoint not in FEATURE_ENDPOINTS:
            raise I3DConvertError(f"unknown endpoint {self.endpoint!r}; choose one of {', '.join(FEATURE_ENDPOINTS)}")
        if self.stream not in STREAMS:
            raise I3DConvertError(f"stream must be one of {', '.join(STREAMS)}, got {self.stream!r}")
        if self.window < 1:
            raise I3DConvertError(f"window must be at least 1, got {self.window}")
        if self.stride is not None and self.stride < 1:
            raise I3DConvertError(f"stride must be at least 1, got {self.stride}")
        if self.batch_size < 1:
            raise I3DConvertError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.flow_backend not in BACKENDS:
            raise I3DConvertError(f"flow backend must be one of {', '.join(BACKENDS)}, got {self.flow_backend!r}")

    @property
    def streams(self) -> tuple:
        return ("rgb", "flow") if self.stream == "both" else (self.stream,)

    def describe(self) -> dict:
        """A JSON-able record of the settings."""
        out = {"stream": self.stream, "endpoint": self.endpoint, "window": self.window,
               "stride": self.window if self.stride is None else self.stride, "batch_size": self.batch_size,
               "decode": {k: _json_value(k, v) for k, v in asdict(self.decode).items()}}
        if "flow" in self.streams:
            out["flow"] = asdict(self.flow)
            if self.flow_backend != "opencv":  # OpenCV's records keep their key
                out["flow_backend"] = self.flow_backend
        return out

    def key(self) -> str:
        """sha256 of :meth:`describe` (batch size excluded: it does not change the features' meaning)."""
        record = {k: v for k, v in self.describe().items() if k != "batch_size"}
        return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


@dataclass
class PreparedVideo:
    """One video, decoded and turned into network input (or the reason it could not be)."""

    index: int
    source: VideoSource
    size: int = 0
    mtime_ns: int = 0
    frames: int = 0
    rgb: Optional[np.ndarray] = None
    flow: Optional[np.ndarray] = None
    error: Optional[str] = None


def source_stat(path: Path) -> tuple:
    """``(size, mtime_ns)`` of a video file, or summed over the images of a frame folder."""
    if path.is_dir():
        stats = [p.stat() for p in sorted(path.iterdir()) if p.is_file()]
        return sum(s.st_size for s in stats), max((s.st_mtime_ns for s in stats), default=0)
    stat = os.stat(path)
    return stat.st_size, stat.st_mtime_ns


def rgb_input(frames: np.ndarray) -> np.ndarray:
    """uint8 ``[T, H, W, 3]`` -> float32 in [-1, 1] (``u8 / 127.5 - 1``)."""
    return frames.astype(np.float32) / np.float32(127.5) - np.float32(1.0)


def flow_input(frames: np.ndarray, params: TVL1Params, backend: str = "opencv") -> np.ndarray:
    """uint8 ``[T, H, W, 3]`` -> TV-L1 flow input ``[T - 1, H, W, 2]`` in [-1, 1] (field ``t``: frame ``t`` to ``t + 1``)."""
    if frames.shape[0] < 2:
        raise I3DConvertError(f"flow needs at least 2 frames, the video has {frames.shape[0]}")
    return flow_to_input(tvl1_flow(frames, params, backend=backend))


def prepare_video(index: int, source: VideoSource, settings: FeatureSettings) -> PreparedVideo:
    """Decode ``source`` with ``settings.decode`` and build each stream's input.

    Never raises for a bad video: the problem is returned in ``error`` (one line).
    """
    prepared = PreparedVideo(index, source)
    try:
        prepared.size, prepared.mtime_ns = source_stat(source.path)
        frames = decode(source.path, settings.decode)
        prepared.frames = int(frames.shape[0])
        usable = prepared.frames - (1 if "flow" in settings.streams else 0)
        if usable < settings.window:
            raise I3DConvertError(
                f"the video has {prepared.frames} frames after decoding, {usable} usable for the "
                f"{settings.stream} stream, fewer than the window of {settings.window}; "
                f"use a window of at most {max(usable, 1)}")
        if "rgb" in settings.streams:
            prepared.rgb = rgb_input(frames[:usable])
        if "flow" in settings.streams:
            prepared.flow = flow_input(frames, settings.flow, settings.flow_backend)
    except (DecodeError, I3DConvertError, OSError) as exc:
        prepared.error = " ".join(str(exc).split())
        prepared.rgb = prepared.flow = None
    return prepared
