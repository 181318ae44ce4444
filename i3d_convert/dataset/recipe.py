"""DeepMind's input recipe for one video: decoded frames -> the RGB and/or TV-L1 flow clip.

RGB: frames at 25 fps, shorter side resized to 256 (bilinear), centre 224x224 crop, values
``u8 / 127.5 - 1`` in [-1, 1]. Flow: the same frames in grayscale, TV-L1 (OpenCV) from frame
``t`` to ``t + 1``, truncated to [-20, 20] and divided by 20, channels (x, y). ``T`` frames give
``T - 1`` flow fields, so the flow stream has ``T - 1`` frames; with both streams the RGB stream
uses frames ``0 .. T-2`` too, as DeepMind's sample does (79 RGB frames and the 79 flows between
80 decoded frames), so both have the same windows.

Flow's order (``flow_region``): ``"resized"`` (the README's order, the default) computes TV-L1 on
the whole resized frame and cuts the RGB crop(s) from the flow field with the same boxes;
``"crop"`` (the package before issue 21) computes TV-L1 on each crop's frames. ``recipe``
``"mediapipe"`` stores RGB frames and flow as MediaPipe's Kinetics graph does (uint8 flow images,
JPEG quality 100; :mod:`i3d_convert.dataset.mediapipe`). docs/features.md has the details.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, Optional, Union

import numpy as np
import torch

from i3d_convert.dataset.crops import base_crop_count, crop_count, cut_crops
from i3d_convert.errors import I3DConvertError
from i3d_convert.flow.backends import ALGORITHMS, BACKENDS, default_backend, tvl1_flow
from i3d_convert.flow.tvl1 import TVL1Params, flow_to_input
from i3d_convert.flow.tvl1_cuda_variant import TVL1CudaParams
from i3d_convert.io.video_decode import DecodeOptions

STREAMS = ("rgb", "flow", "both")
#: Which OpenCV code path the TV-L1 flow reproduces (recorded in the settings of flow outputs).
FLOW_PATH = "opencv-portable"
#: Where TV-L1 runs: on the whole resized frame, then cropped (README order), or on each crop.
FLOW_REGIONS = ("resized", "crop")
#: How frames and flow are stored before the network: as computed, or MediaPipe's JPEG images.
RECIPES = ("deepmind", "mediapipe")


def _json_value(name: str, value):
    """Settings as JSON values that compare equal however they were given (fps 25 == 25.0)."""
    if name == "fps" and value is not None:
        return float(value)
    return value if value is None or isinstance(value, (bool, int, float, str)) else str(value)


@dataclass(frozen=True)
class FeatureSettings:
    """Everything that decides a video's features (recorded in the manifest; a change recomputes).

    ``decode``: frame rate, resize and crop; ``flow``: the TV-L1 parameters; ``flow_backend``:
    ``opencv``, ``torch`` (its PyTorch port) or ``auto`` (the faster on the device: :meth:`for_device`);
    both compute the same flow bit for bit, so the backend is not part of the key; ``flow_device``:
    where the torch backend runs (None: the CPU of the decoding worker), and ``flow_compile``: the
    torch backend through ``torch.compile``, neither part of the key (the same flow either way);
    ``flow_algorithm``: ``opencv-cpu`` or ``opencv-cuda`` (OpenCV's CUDA TV-L1, torch backend only;
    ``flow`` then holds :class:`TVL1CudaParams`, mapped from ``TVL1Params`` if given those);
    ``crops``: ``center``, ``five`` or ``ten`` crops of the resized frame per window
    (:mod:`~i3d_convert.dataset.crops`); ``flow_region``: ``resized`` (TV-L1 on the whole resized
    frame, then the RGB crop boxes cut from the field) or ``crop`` (TV-L1 on each crop's frames);
    ``recipe``: ``deepmind`` or ``mediapipe`` (RGB and flow round-tripped through MediaPipe's JPEG
    storage; use :func:`recipe_settings` for its decode options too).
    """

    stream: str = "rgb"
    endpoint: str = "pool"
    window: int = 64
    stride: Optional[int] = None
    batch_size: int = 4
    decode: DecodeOptions = field(default_factory=DecodeOptions)
    flow: Union[TVL1Params, TVL1CudaParams] = field(default_factory=TVL1Params)
    crops: str = "center"
    flow_backend: str = "auto"
    flow_algorithm: str = "opencv-cpu"
    flow_region: str = "resized"
    recipe: str = "deepmind"
    flow_device: Optional[str] = None
    flow_compile: bool = False

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
        if self.crops != "center" and self.crop_size is None:
            raise I3DConvertError(f"{self.crops} crops need a crop size (--crop) of the resized frame")
        if self.flow_backend not in BACKENDS + ("auto",):
            raise I3DConvertError(f"flow backend must be one of {', '.join(BACKENDS + ('auto',))}, "
                                  f"got {self.flow_backend!r}")
        if self.flow_algorithm not in ALGORITHMS:
            raise I3DConvertError(f"flow algorithm must be one of {', '.join(ALGORITHMS)}, got {self.flow_algorithm!r}")
        if self.flow_algorithm == "opencv-cuda":
            if self.flow_backend == "opencv":
                raise I3DConvertError("flow algorithm opencv-cuda runs on the torch backend only "
                                      "(opencv-python has no CUDA): add --flow-backend torch")
            if isinstance(self.flow, TVL1Params):  # the flow stream then passes TVL1CudaParams on
                object.__setattr__(self, "flow", TVL1CudaParams.from_cpu(self.flow))
        elif not isinstance(self.flow, TVL1Params):
            raise I3DConvertError("flow_algorithm opencv-cpu takes TVL1Params")
        if self.flow_region not in FLOW_REGIONS:
            raise I3DConvertError(f"flow region must be one of {', '.join(FLOW_REGIONS)}, got {self.flow_region!r}")
        if self.recipe not in RECIPES:
            raise I3DConvertError(f"recipe must be one of {', '.join(RECIPES)}, got {self.recipe!r}")
        if self.recipe == "mediapipe" and self.flow_region != "resized":
            raise I3DConvertError("the mediapipe recipe computes flow on the whole scaled frame: "
                                  f"flow region {self.flow_region!r} does not apply")

    @property
    def crop_size(self) -> Optional[int]:
        """The side of the crop(s) cut from the resized frame, or None when frames are not cropped
        (``resize_mode="none"`` ignores ``decode.crop``)."""
        return None if self.decode.resize_mode == "none" else self.decode.crop

    @property
    def flow_on_resized(self) -> bool:
        """Whether TV-L1 runs on the whole resized frame and its field is cropped afterwards (only
        differs from running it on the crops when there is a crop)."""
        return self.flow_region == "resized" and self.crop_size is not None and "flow" in self.streams

    @property
    def crops_after_decoding(self) -> bool:
        """Whether the crops are cut from the whole decoded (resized) frame rather than by the
        decoder: five/ten crops, flow on the resized frame, or MediaPipe's JPEG of the whole frame."""
        return self.crop_size is not None and (self.crops != "center" or self.flow_on_resized
                                               or self.recipe == "mediapipe")

    def frame_options(self) -> DecodeOptions:
        """The decoder's options for this recipe's frames: ``decode`` without its crop when
        :attr:`crops_after_decoding`."""
        return dataclasses.replace(self.decode, crop=None) if self.crops_after_decoding else self.decode

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
            if self.flow_algorithm != "opencv-cpu":  # absent for the CPU algorithm: its records keep their key
                out["flow_algorithm"] = self.flow_algorithm
            if self.flow_on_resized:  # absent for crop-first flow: outputs made before issue 21 keep their key
                out["flow_region"] = self.flow_region
        if self.crops != "center":  # absent for centre crops: outputs made before crops existed stay current
            out["crops"] = self.crops
        if self.recipe != "deepmind":
            out["recipe"] = self.recipe
        return out

    def for_device(self, device: torch.device) -> "FeatureSettings":
        """These settings for a run whose model is on ``device``: ``auto`` resolved to the faster
        backend there (:func:`~i3d_convert.flow.backends.default_backend`: OpenCV on the CPU, the
        torch port on CUDA), and the torch backend's flow on the model's CUDA device."""
        if "flow" not in self.streams:
            return self
        backend = self.flow_backend
        if backend == "auto":
            backend = "torch" if self.flow_algorithm == "opencv-cuda" else default_backend(device)
        flow_device = self.flow_device
        if flow_device is None and backend == "torch" and device.type == "cuda":
            flow_device = str(device)
        return dataclasses.replace(self, flow_backend=backend, flow_device=flow_device)

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


def flow_input(frames: np.ndarray, params: Union[TVL1Params, TVL1CudaParams], backend: str = "auto",
               device: Optional[str] = None, compile: bool = False) -> np.ndarray:
    """uint8 ``[T, H, W, 3]`` -> TV-L1 flow input ``[T - 1, H, W, 2]`` in [-1, 1] (field ``t``: frame ``t`` to ``t + 1``).

    The algorithm follows the parameters' class (``TVL1CudaParams``: OpenCV's CUDA variant);
    ``device``, ``compile``: where and how the torch backend runs."""
    if frames.shape[0] < 2:
        raise I3DConvertError(f"flow needs at least 2 frames, the video has {frames.shape[0]}")
    return flow_to_input(tvl1_flow(frames, params, backend=backend, device=device, compile=compile))


def _cut(frame: np.ndarray, settings: FeatureSettings) -> np.ndarray:
    """``[H, W, C]`` as decoded by :meth:`FeatureSettings.frame_options` -> the base crops ``[n, s, s, C]``."""
    if not settings.crops_after_decoding:  # the decoder cut the crop already (or there is none)
        return frame[None]
    return cut_crops(frame, settings.crop_size, base_crop_count(settings.crops))


def rgb_crops(frame: np.ndarray, settings: FeatureSettings) -> np.ndarray:
    """One uint8 ``[H, W, 3]`` frame decoded with :meth:`FeatureSettings.frame_options` -> its uint8 RGB
    base crops ``[n, s, s, 3]`` (n = 1, or 5 before mirroring), stored as the recipe stores them."""
    if settings.recipe == "mediapipe":  # stored whole as a JPEG, cropped when read
        from i3d_convert.dataset.mediapipe import jpeg_round_trip

        frame = jpeg_round_trip(frame)
    return _cut(frame, settings)


def flow_fields(frames: np.ndarray, settings: FeatureSettings) -> np.ndarray:
    """Consecutive uint8 ``[n, H, W, 3]`` frames decoded with :meth:`FeatureSettings.frame_options`
    -> the flow input of their ``n - 1`` pairs, float32 ``[n - 1, crops, s, s, 2]`` in [-1, 1] (base crops).

    ``flow_region="resized"``: one TV-L1 field per pair on the whole frame, each crop box cut from
    it; ``"crop"``: TV-L1 on each crop's frames (the warp sees the crop's border)."""
    compute = _mediapipe_flow if settings.recipe == "mediapipe" else flow_input
    if settings.flow_on_resized or not settings.crops_after_decoding:
        fields = compute(frames, settings.flow, settings.flow_backend, settings.flow_device, settings.flow_compile)
        return np.stack([_cut(f, settings) for f in fields])
    per_crop = np.stack([_cut(f, settings) for f in frames], axis=1)  # [crops, n, s, s, 3]
    return np.stack([compute(np.ascontiguousarray(c), settings.flow, settings.flow_backend, settings.flow_device,
                             settings.flow_compile) for c in per_crop], axis=1)


def _mediapipe_flow(frames: np.ndarray, params: TVL1Params, backend: str, device: Optional[str],
                    compile: bool) -> np.ndarray:
    from i3d_convert.dataset.mediapipe import stored_flow

    if frames.shape[0] < 2:
        raise I3DConvertError(f"flow needs at least 2 frames, the video has {frames.shape[0]}")
    return flow_to_input(stored_flow(tvl1_flow(frames, params, backend=backend, device=device, compile=compile)))


def video_inputs(frames: np.ndarray, settings: FeatureSettings) -> Dict[str, np.ndarray]:
    """The whole video at once (what :class:`~i3d_convert.dataset.streaming.VideoWindows` streams):
    uint8 ``[T, H, W, 3]`` decoded with :meth:`FeatureSettings.frame_options` -> ``{"rgb": uint8
    [crops, T', s, s, 3], "flow": float32 [crops, T - 1, s, s, 2]}`` over the base crops, with
    ``T' = T - 1`` when the flow stream is computed too (both streams get the same windows)."""
    usable = len(frames) - (1 if "flow" in settings.streams else 0)
    out = {}
    if "rgb" in settings.streams:
        out["rgb"] = np.stack([rgb_crops(f, settings) for f in frames[:usable]], axis=1)
    if "flow" in settings.streams:
        out["flow"] = np.ascontiguousarray(np.swapaxes(flow_fields(frames, settings), 0, 1))
    return out


def decode_inputs(path, settings: FeatureSettings) -> Dict[str, np.ndarray]:
    """:func:`video_inputs` of a video file decoded whole (memory grows with its length: the
    streaming path is :class:`~i3d_convert.dataset.streaming.VideoWindows`)."""
    from i3d_convert.io.video_decode import decode

    return video_inputs(decode(path, settings.frame_options()), settings)


#: MediaPipe's Kinetics graph's frames: 25 fps by its PacketResamplerCalculator, aspect ratio
#: clamped to [9/16, 16/9], height 256 with the aspect ratio kept (INTER_AREA when shrinking); the
#: centre 224 crop is the reader's choice (the graph stores whole frames), DeepMind's here.
MEDIAPIPE_DECODE = DecodeOptions(fps=25.0, sampling="mediapipe", resize_mode="mediapipe", resize_shorter=256,
                                 crop=224)


def recipe_settings(recipe: str = "deepmind", **fields) -> FeatureSettings:
    """:class:`FeatureSettings` of a named recipe. ``deepmind``: ``fields`` as given; ``mediapipe``:
    MediaPipe's Kinetics graph (``tvl1_flow_and_rgb_from_file.pbtxt``, docs/features.md): its frame
    rate, sampling and scaling (:data:`MEDIAPIPE_DECODE`; from ``fields["decode"]`` it keeps the
    crop, ``max_frames``, threads and limits), TV-L1 on the whole scaled frame and its JPEG storage
    of RGB and flow, then the crop(s) of ``crops``."""
    if recipe not in RECIPES:
        raise I3DConvertError(f"recipe must be one of {', '.join(RECIPES)}, got {recipe!r}")
    if recipe == "mediapipe":
        given = fields.get("decode") or DecodeOptions()
        fields["decode"] = dataclasses.replace(given, fps=MEDIAPIPE_DECODE.fps, sampling=MEDIAPIPE_DECODE.sampling,
                                               resize_mode=MEDIAPIPE_DECODE.resize_mode,
                                               resize_shorter=MEDIAPIPE_DECODE.resize_shorter)
    return FeatureSettings(recipe=recipe, **fields)


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
