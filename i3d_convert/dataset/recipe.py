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
from typing import Optional, Union

import numpy as np

from i3d_convert.dataset.crops import crop_count
from i3d_convert.errors import I3DConvertError
from i3d_convert.flow.backends import ALGORITHMS, BACKENDS, tvl1_flow
from i3d_convert.flow.tvl1 import TVL1Params, flow_to_input
from i3d_convert.flow.tvl1_cuda_variant import TVL1CudaParams
from i3d_convert.io.video_decode import DecodeOptions

STREAMS = ("rgb", "flow", "both")
#: Which OpenCV code path the TV-L1 flow reproduces (recorded in the settings of flow outputs).
FLOW_PATH = "opencv-portable"


def _json_value(name: str, value):
    """Settings as JSON values that compare equal however they were given (fps 25 == 25.0)."""
    if name == "fps" and value is not None:
        return float(value)
    return value if value is None or isinstance(value, (bool, int, float, str)) else str(value)


@dataclass(frozen=True)
class FeatureSettings:
    """Everything that decides a video's features (recorded in the manifest; a change recomputes).

    ``decode``: frame rate, resize and crop; ``flow``: the TV-L1 parameters; ``flow_backend``:
    ``opencv`` (the reference) or ``torch`` (the PyTorch port, on the CPU of the decoding worker);
    ``flow_algorithm``: ``opencv-cpu`` or ``opencv-cuda`` (OpenCV's CUDA TV-L1, torch backend only;
    ``flow`` then holds :class:`TVL1CudaParams`, mapped from ``TVL1Params`` if given those);
    ``crops``: ``center``, ``five`` or ``ten`` crops of the resized frame per window
    (:mod:`~i3d_convert.dataset.crops`).
    """

    stream: str = "rgb"
    endpoint: str = "pool"
    window: int = 64
    stride: Optional[int] = None
    batch_size: int = 4
    decode: DecodeOptions = field(default_factory=DecodeOptions)
    flow: Union[TVL1Params, TVL1CudaParams] = field(default_factory=TVL1Params)
    crops: str = "center"
    flow_backend: str = "opencv"
    flow_algorithm: str = "opencv-cpu"

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
        crop_count(self.crops)
        if self.crops != "center" and (self.decode.crop is None or self.decode.resize_mode != "deepmind"):
            raise I3DConvertError(f"{self.crops} crops need a crop size (--crop) of the resized frame")
        if self.flow_backend not in BACKENDS:
            raise I3DConvertError(f"flow backend must be one of {', '.join(BACKENDS)}, got {self.flow_backend!r}")
        if self.flow_algorithm not in ALGORITHMS:
            raise I3DConvertError(f"flow algorithm must be one of {', '.join(ALGORITHMS)}, got {self.flow_algorithm!r}")
        if self.flow_algorithm == "opencv-cuda":
            if self.flow_backend != "torch":
                raise I3DConvertError("flow algorithm opencv-cuda runs on the torch backend only "
                                      "(opencv-python has no CUDA): add --flow-backend torch")
            if isinstance(self.flow, TVL1Params):  # the flow stream then passes TVL1CudaParams on
                object.__setattr__(self, "flow", TVL1CudaParams.from_cpu(self.flow))
        elif not isinstance(self.flow, TVL1Params):
            raise I3DConvertError("flow_algorithm opencv-cpu takes TVL1Params")

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
            if self.flow_algorithm == "opencv-cpu":
                # both backends compute OpenCV's portable path (flow/tvl1.py: portable_opencv), bit
                # for bit; flows made before on OpenCV's default path (IPP, FMA) differ: recompute
                out["tvl1_path"] = FLOW_PATH
            if self.flow_backend != "opencv":  # OpenCV's records keep their key
                out["flow_backend"] = self.flow_backend
            if self.flow_algorithm != "opencv-cpu":  # and so do the CPU algorithm's
                out["flow_algorithm"] = self.flow_algorithm
        if self.crops != "center":  # absent for centre crops: outputs made before crops existed stay current
            out["crops"] = self.crops
        return out

    def key(self) -> str:
        """sha256 of :meth:`describe` (batch size excluded: it does not change the features' meaning)."""
        record = {k: v for k, v in self.describe().items() if k != "batch_size"}
        return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


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


def flow_input(frames: np.ndarray, params: Union[TVL1Params, TVL1CudaParams], backend: str = "opencv") -> np.ndarray:
    """uint8 ``[T, H, W, 3]`` -> TV-L1 flow input ``[T - 1, H, W, 2]`` in [-1, 1] (field ``t``: frame ``t`` to ``t + 1``).

    The algorithm follows the parameters' class (``TVL1CudaParams``: OpenCV's CUDA variant)."""
    if frames.shape[0] < 2:
        raise I3DConvertError(f"flow needs at least 2 frames, the video has {frames.shape[0]}")
    return flow_to_input(tvl1_flow(frames, params, backend=backend))


def stride_for_rate(fps: Optional[float], features_per_second: float) -> int:
    """The stride in frames that gives ``features_per_second`` windows a second at ``fps`` frames a second.

    Refuses a rate that is not a whole number of frames (the windows would drift) and a native frame
    rate (``fps`` None: the stride would differ from video to video)."""
    if fps is None:
        raise I3DConvertError("a feature rate needs a fixed frame rate (--fps N), not --fps native: "
                              "give --stride in frames instead")
    if not features_per_second > 0:
        raise I3DConvertError(f"the feature rate must be positive, got {features_per_second}")
    stride = float(fps) / float(features_per_second)
    if stride < 1 - 1e-9 or abs(stride - round(stride)) > 1e-6:
        raise I3DConvertError(f"{features_per_second} features/s at {float(fps):g} fps is a stride of {stride:.4g} "
                              f"frames, not a whole number; rates that work at {float(fps):g} fps are "
                              f"{float(fps):g}/N, e.g. {float(fps) / max(1, round(stride)):g}")
    return int(round(stride))
