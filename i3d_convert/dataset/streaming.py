"""One video as a stream of window batches: decode -> resize -> flow -> crop -> windows, frame by frame.

Memory is bounded by the window, stride, batch size and crops, never by the video's length: frames
come one at a time from :func:`~i3d_convert.io.video_decode.iter_frames`; the buffer keeps only the
frames (uint8) and flow fields of windows not yet cut, so overlapping windows reuse them; a frame
no window needs is decoded but never converted, resized or stored, and a flow field no window
needs is never computed. Flow fields are
computed in runs of consecutive frames with one frame of overlap (field ``t`` is frame ``t`` to
``t + 1``, each pair independent of the others), so the fields equal those of the whole video.
With ``flow_region="resized"`` (or five/ten crops) the buffer holds whole resized frames; a field
is computed once on the whole frame and every crop box is cut from it
(:func:`~i3d_convert.dataset.recipe.flow_fields`), the RGB crops from the frames with the same boxes.

Windows ``k = 0, 1, ...`` start at frame ``k * stride`` and are batched ``batch_size`` at a time in
that order, the batches :func:`~i3d_convert.dataset.features.extract_features` makes over the whole
clip; the model runs on each crop's batch separately, so features are bit-identical to the
whole-video path and crop 0 to the ``center`` run.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional

import numpy as np
import torch

from i3d_convert.dataset.crops import crop_count, mirrored
from i3d_convert.dataset.features import check_endpoint, run_batch
from i3d_convert.dataset.recipe import FeatureSettings, flow_fields, rgb_crops, rgb_input
from i3d_convert.errors import I3DConvertError, PathLike
from i3d_convert.io.video_decode import DecodeError, iter_frames

#: No cap on decoded bytes: the stream holds a bounded number of frames whatever the video's length.
_UNBOUNDED = 2**62


@dataclass
class WindowBatch:
    """Consecutive windows of one video. ``inputs``: rgb uint8 ``[crops, B, T, H, W, 3]``, flow float32
    ``[crops, B, T, H, W, 2]`` in [-1, 1], over the base crops (1, or 5 before mirroring)."""

    first: int
    starts: List[int]
    inputs: Dict[str, np.ndarray]


class VideoWindows:
    """Iterating yields the :class:`WindowBatch` es of ``path`` from window ``first_window`` on
    (a multiple of ``settings.batch_size``: the batches stay the same); then ``frames`` holds the
    number of decoded frames. Raises :class:`DecodeError` / :class:`I3DConvertError` (one line)."""

    def __init__(self, path: PathLike, settings: FeatureSettings, first_window: int = 0) -> None:
        if first_window % settings.batch_size:
            raise I3DConvertError(f"first_window {first_window} is not a multiple of the batch size "
                                  f"{settings.batch_size}")
        self.path, self.settings, self.first_window = os.fspath(path), settings, first_window
        self.window, self.stride = settings.window, settings.stride or settings.window
        self.flow = "flow" in settings.streams
        self.extra = 1 if self.flow else 0  # the flow stream's last window needs one frame more
        self.frames = 0
        self._frames: Dict[int, np.ndarray] = {}  # frame index -> uint8 [H, W, 3] as decoded
        self._fields: Dict[int, np.ndarray] = {}  # field index -> float32 [base crops, s, s, 2]

    def _decode_options(self):
        return dataclasses.replace(self.settings.frame_options(), max_output_bytes=_UNBOUNDED)

    def _needed(self, t: int) -> bool:
        """Whether frame ``t`` lies in a window from ``first_window`` on (flow: or is its last frame)."""
        k = t // self.stride
        return k >= self.first_window and t - k * self.stride < self.window + self.extra

    def __iter__(self) -> Iterator[WindowBatch]:
        shape = None
        k, batch = self.first_window, []
        for t, frame in enumerate(iter_frames(self.path, self._decode_options(), wanted=self._needed)):
            self.frames = t + 1
            if frame is not None:
                if shape is None:
                    shape = frame.shape
                elif frame.shape != shape:
                    raise DecodeError(self.path, f"frame size changes within the video ({shape} then "
                                                 f"{frame.shape}); use resize_mode='deepmind'")
                self._frames[t] = frame
            while k * self.stride + self.window + self.extra <= self.frames:
                batch.append(self._cut(k))
                k += 1
                self._forget_before(k * self.stride)
                if len(batch) == self.settings.batch_size:
                    yield self._batch(k - len(batch), batch)
                    batch = []
        if batch:
            yield self._batch(k - len(batch), batch)
        self._check_length()

    def _cut(self, k: int) -> Dict[str, np.ndarray]:
        start, stop = k * self.stride, k * self.stride + self.window
        out = {}
        if "rgb" in self.settings.streams:
            out["rgb"] = np.stack([rgb_crops(self._frames[t], self.settings) for t in range(start, stop)], axis=1)
        if self.flow:
            missing = [t for t in range(start, stop) if t not in self._fields]
            if missing:  # consecutive: earlier fields of this window were kept from the previous one
                frames = np.stack([self._frames[t] for t in range(missing[0], stop + 1)])
                self._fields.update(zip(missing, flow_fields(frames, self.settings)))
            out["flow"] = np.stack([self._fields[t] for t in range(start, stop)], axis=1)
        return out

    def _forget_before(self, t: int) -> None:
        for store in (self._frames, self._fields):
            for old in [i for i in store if i < t]:
                del store[old]

    def _batch(self, first: int, windows: List[Dict[str, np.ndarray]]) -> WindowBatch:
        inputs = {s: np.stack([w[s] for w in windows], axis=1) for s in windows[0]}
        return WindowBatch(first, [(first + i) * self.stride for i in range(len(windows))], inputs)

    def _check_length(self) -> None:
        usable = self.frames - self.extra
        if usable < self.window:
            raise I3DConvertError(
                f"the video has {self.frames} frames after decoding, {max(usable, 0)} usable for the "
                f"{self.settings.stream} stream, fewer than the window of {self.window}; "
                f"use a window of at most {max(usable, 1)}", self.path)


def crop_inputs(batch: WindowBatch, stream: str, crop: int) -> np.ndarray:
    """Crop ``crop`` (0..9, :mod:`~i3d_convert.dataset.crops` order) of a batch as network input:
    float32 ``[B, T, H, W, C]`` in [-1, 1], contiguous."""
    base = batch.inputs[stream]
    windows = base[crop % base.shape[0]]
    if crop >= base.shape[0]:
        windows = mirrored(windows, flow=stream == "flow")
    return np.ascontiguousarray(rgb_input(windows) if stream == "rgb" else windows)


def batch_features(models: Dict[str, torch.nn.Module], batch: WindowBatch, settings: FeatureSettings,
                   device: torch.device, path: Optional[PathLike] = None) -> Dict[str, np.ndarray]:
    """``{stream: float32 [B, ...]}`` (``center``) or ``[B, crops, ...]`` (``five``/``ten``) for one batch."""
    out = {}
    crops = crop_count(settings.crops)
    for stream, model in models.items():
        rows = []
        for crop in range(crops):
            x = crop_inputs(batch, stream, crop)
            if crop == 0:
                check_endpoint(model, settings.endpoint, x.shape[1:4], path)
            rows.append(run_batch(model, x, settings.endpoint, device))
        out[stream] = rows[0] if settings.crops == "center" else np.stack(rows, axis=1)
    return out
