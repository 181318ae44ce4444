"""The spatial half of DeepMind's I3D input recipe: shorter side to 256 (bilinear), centre 224 x 224 crop.

All functions take and return uint8 RGB ``[H, W, 3]`` frames, except
:func:`to_model_range`, which maps them to the model's float32 [-1, 1] range.
The choices (Pillow BILINEAR by default, rounding of the resized side, crop
offsets) are explained in docs/video.md.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from i3d_convert.errors import I3DConvertError
from i3d_convert.io.video_options import DecodeOptions


def _target_size(width: int, height: int, shorter: int) -> Tuple[int, int]:
    """(new_width, new_height) with the shorter side = ``shorter``; the other side rounded half up, in integers."""
    if width <= height:
        return shorter, (2 * height * shorter + width) // (2 * width)
    return (2 * width * shorter + height) // (2 * height), shorter


def _linear_weights(n_in: int, n_out: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each output index: the two source indices and the float32 weight of the second (half-pixel centres)."""
    src = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    src = np.clip(src, 0.0, n_in - 1)
    i0 = np.floor(src).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, (src - i0).astype(np.float32)


def _linear_resize(
    img: np.ndarray, new_w: int, new_h: int, box: Optional[Tuple[int, int, int, int]] = None
) -> np.ndarray:
    """2-tap bilinear, half-pixel centres, no antialiasing, edge clamp; float32, then rounded half up to uint8.

    ``box`` = (x0, y0, x1, y1) in output pixels computes only that part: the
    same pixels as cropping the full result, since each output pixel is
    computed independently.
    """
    h, w = img.shape[:2]
    bx0, by0, bx1, by1 = box if box is not None else (0, 0, new_w, new_h)
    x0, x1, wx = (v[bx0:bx1] for v in _linear_weights(w, new_w))
    y0, y1, wy = (v[by0:by1] for v in _linear_weights(h, new_h))
    rows = img[y0].astype(np.float32) * (1 - wy)[:, None, None] + img[y1].astype(np.float32) * wy[:, None, None]
    out = rows[:, x0] * (1 - wx)[None, :, None] + rows[:, x1] * wx[None, :, None]
    return np.clip(np.floor(out + 0.5), 0, 255).astype(np.uint8)


def _pil_resize(rgb: np.ndarray, new_w: int, new_h: int) -> np.ndarray:
    from PIL import Image  # noqa: PLC0415  (Pillow is in the [video] extra)

    return np.asarray(Image.fromarray(rgb).resize((new_w, new_h), Image.Resampling.BILINEAR))


def _even_crop_for_aspect(width: int, height: int, low: float = 9 / 16, high: float = 16 / 9) -> Tuple[int, int, int, int]:
    """``(left, top, width, height)`` of the centre crop that brings the aspect ratio into
    ``[low, high]`` (MediaPipe's scale_image_utils FindCropDimensions: the cut side truncated to
    an even number of pixels, the offset floored)."""
    aspect = width / height
    if aspect > high:
        new_w = int(height * high) // 2 * 2
        return (width - new_w) // 2, 0, new_w, height
    if aspect < low:
        new_h = int(width / low) // 2 * 2
        return 0, (height - new_h) // 2, width, new_h
    return 0, 0, width, height


def _mediapipe_size(width: int, height: int, target_height: int) -> Tuple[int, int]:
    """MediaPipe's FindOutputDimensions with only a target height, aspect kept: the height, and the
    width ``int(target / height * width)`` (double arithmetic, that order), both made even."""
    new_w = int(target_height / height * width) // 2 * 2
    return max(new_w, 1), max(target_height // 2 * 2, 1)


def _srgb_luts() -> Tuple[np.ndarray, np.ndarray]:
    """MediaPipe's image_frame_util LUTs: uint8 sRGB -> uint16 linear light, and back (256 and
    65536 entries; the sRGB curve in double precision, ``+ .5`` then truncated)."""
    i = np.arange(256, dtype=np.float64) / 255.0
    to_linear = np.where(i < 0.04045, i / 12.92, ((i + 0.055) / 1.055) ** 2.4) * 65535.0 + 0.5
    j = np.arange(65536, dtype=np.float64) / 65535.0
    to_srgb = np.where(j < 0.0031308, j * 12.92, 1.055 * j ** (1 / 2.4) - 0.055) * 255.0 + 0.5
    return to_linear.astype(np.uint16), to_srgb.astype(np.uint8)


def mediapipe_scale(rgb: np.ndarray, target_height: int) -> np.ndarray:
    """MediaPipe's ScaleImageCalculator as its Kinetics graph ``tvl1_flow_and_rgb_from_file.pbtxt``
    configures it (``target_height`` 256, ``preserve_aspect_ratio: true``, other options default):
    the aspect-ratio crop, then cv2.resize to :func:`_mediapipe_size` with INTER_AREA when neither
    side grows (its open-source ImageResizer), else INTER_CUBIC in 16-bit linear light
    (RescaleSrgbImage). uint8 ``[H, W, 3]`` in and out."""
    import cv2  # noqa: PLC0415  (opencv is in the [video] extra)

    left, top, width, height = _even_crop_for_aspect(rgb.shape[1], rgb.shape[0])
    rgb = np.ascontiguousarray(rgb[top: top + height, left: left + width])
    new_w, new_h = _mediapipe_size(width, height, target_height)
    if (new_w, new_h) == (width, height):
        return rgb
    if width >= new_w and height >= new_h:
        return cv2.resize(rgb, (new_w, new_h), interpolation=cv2.INTER_AREA)
    to_linear, to_srgb = _srgb_luts()
    return to_srgb[cv2.resize(to_linear[rgb], (new_w, new_h), interpolation=cv2.INTER_CUBIC)]


def resize_and_crop(rgb: np.ndarray, options: DecodeOptions = DecodeOptions()) -> np.ndarray:
    """Apply the spatial part of the recipe to one frame.

    rgb: [H, W, 3] uint8. Returns [crop, crop, 3] uint8 in ``"deepmind"`` mode
    (the shorter side resized to ``options.resize_shorter`` first; either step
    skipped when its option is None), or ``rgb`` itself in ``"none"`` mode;
    ``"mediapipe"`` mode: :func:`mediapipe_scale` to height ``resize_shorter``, then the crop.
    Crop offsets: ``((W-crop)//2, (H-crop)//2)``. A crop larger than the
    (resized) frame raises :class:`I3DConvertError`.
    """
    if options.resize_mode == "none":
        return rgb
    h, w = rgb.shape[:2]
    crop = options.crop
    if options.resize_mode == "mediapipe":
        rgb = mediapipe_scale(rgb, options.resize_shorter)
        h, w = rgb.shape[:2]
    elif options.resize_shorter is not None:
        new_w, new_h = _target_size(w, h, options.resize_shorter)
        if (new_w, new_h) != (w, h):
            if options.resize_method == "pil":
                rgb = _pil_resize(rgb, new_w, new_h)
            elif crop is not None and crop <= min(new_w, new_h):  # compute only the crop
                x0, y0 = (new_w - crop) // 2, (new_h - crop) // 2
                return _linear_resize(rgb, new_w, new_h, (x0, y0, x0 + crop, y0 + crop))
            else:
                rgb = _linear_resize(rgb, new_w, new_h)
        h, w = new_h, new_w
    if crop is not None:
        if crop > h or crop > w:
            raise I3DConvertError(f"crop {crop} is larger than the {'resized ' * (options.resize_shorter is not None)}"
                                  f"frame {w}x{h}")
        y0, x0 = (h - crop) // 2, (w - crop) // 2
        rgb = rgb[y0 : y0 + crop, x0 : x0 + crop]
    return np.ascontiguousarray(rgb)


def to_model_range(frames: np.ndarray) -> np.ndarray:
    """uint8 [..., 3] in [0, 255] -> float32 in [-1, 1] via ``x / 127.5 - 1`` (I3D's input range)."""
    return frames.astype(np.float32) / np.float32(127.5) - np.float32(1.0)
