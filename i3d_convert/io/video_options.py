"""The options of the video reader (:class:`DecodeOptions`), shared by its timing, resize and decode steps.

Import it from :mod:`i3d_convert.io.video_decode`; it lives here so that
:mod:`~i3d_convert.io.video_resize` can use it without importing the decoder.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Literal, Optional, Union

import numpy as np

from i3d_convert.errors import I3DConvertError


@dataclass(frozen=True)
class DecodeOptions:
    """Options for :func:`~i3d_convert.io.video_decode.decode`; checked when created (:class:`I3DConvertError`).

    fps: output frame rate; ``None`` keeps every source frame (native rate).
    sampling: temporal resampling rule, ``"ffmpeg"`` (the fps filter,
        round=near) or ``"mediapipe"`` (PacketResamplerCalculator); see
        :mod:`~i3d_convert.io.video_timing`.
    resize_mode: ``"deepmind"`` = resize the shorter side to ``resize_shorter``
        (other side ``round_half_up(long * resize_shorter / short)``), then a
        centre ``crop`` x ``crop`` crop with offsets ``((W-crop)//2, (H-crop)//2)``;
        ``"none"`` = frames at native resolution; ``"mediapipe"`` = MediaPipe's
        ScaleImageCalculator as its Kinetics graph configures it: a centre crop
        clamping the aspect ratio to [9/16, 16/9], the height resized to
        ``resize_shorter`` (the width ``int(h' * w / h)`` made even; cv2
        INTER_AREA when neither side grows, else INTER_CUBIC in 16-bit linear
        light), then the centre
        ``crop`` as in ``"deepmind"`` mode (``resize_method`` unused).
    resize_shorter / crop: ``None`` skips that step (in ``"deepmind"`` mode).
    resize_method: ``"pil"`` = Pillow ``BILINEAR`` on uint8 (antialiased when
        shrinking, plain bilinear when enlarging); ``"linear"`` = 2-tap
        bilinear with half-pixel centres and no antialiasing (cv2.INTER_LINEAR,
        torch ``align_corners=False``), computed in float32 and rounded.
    max_frames: stop after this many output frames (decoding stops early).
    image_folder_fps: native frame rate of a folder of images and of a still image.
    max_output_bytes: refuse outputs larger than this (``DecodeError``, "too large").
    threads: PyAV decoder threads (0 = FFmpeg's automatic choice).
    """

    fps: Optional[Union[float, Fraction]] = 25.0
    sampling: Literal["ffmpeg", "mediapipe"] = "ffmpeg"
    resize_mode: Literal["deepmind", "none", "mediapipe"] = "deepmind"
    resize_shorter: Optional[int] = 256
    crop: Optional[int] = 224
    resize_method: Literal["pil", "linear"] = "pil"
    max_frames: Optional[int] = None
    image_folder_fps: Union[float, Fraction] = 25.0
    max_output_bytes: int = 8 * 2**30
    threads: int = 0

    def __post_init__(self) -> None:
        if self.fps is not None and not self.fps > 0:
            raise I3DConvertError(f"{{arg}} must be > 0 or None, got {self.fps!r}", argument="fps")
        for name, allowed in (("sampling", ("ffmpeg", "mediapipe")), ("resize_mode", ("deepmind", "none", "mediapipe")),
                              ("resize_method", ("pil", "linear"))):
            if getattr(self, name) not in allowed:
                raise I3DConvertError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name in ("resize_shorter", "crop", "max_frames"):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or value <= 0):
                raise I3DConvertError(f"{name} must be a positive int or None, got {value!r}")
        if self.resize_shorter is not None and self.crop is not None and self.crop > self.resize_shorter:
            raise I3DConvertError(f"crop must be <= resize_shorter, got crop={self.crop}, "
                                  f"resize_shorter={self.resize_shorter}")
        if self.resize_mode == "mediapipe" and self.resize_shorter is None:
            raise I3DConvertError("resize_mode='mediapipe' needs resize_shorter, the height it scales to")
        if not self.image_folder_fps > 0:
            raise I3DConvertError(f"image_folder_fps must be > 0, got {self.image_folder_fps!r}")
        if not _is_int(self.max_output_bytes) or self.max_output_bytes <= 0:
            raise I3DConvertError(f"max_output_bytes must be a positive int, got {self.max_output_bytes!r}")
        if not _is_int(self.threads) or self.threads < 0:
            raise I3DConvertError(f"threads must be an int >= 0, got {self.threads!r}")


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)
