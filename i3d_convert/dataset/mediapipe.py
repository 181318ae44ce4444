"""How MediaPipe's Kinetics graph stores frames and flow (``tvl1_flow_and_rgb_from_file.pbtxt``).

The graph writes each RGB frame and each TV-L1 field as a JPEG of quality 100 into a
SequenceExample; its reader (``kinetics_dataset.py``) decodes them back. Reproduced here:

* flow -> image (FlowToImageCalculator, ``min_value -20``, ``max_value 20``; FlowQuantizerModel):
  per channel ``uint8(clip((v + 20) / 40, 0, 1) * 255)`` in float32, the cast truncating; the
  image is ``(x, y, 0)``;
* JPEG quality 100 (OpenCvImageEncoderCalculator: ``cv::imencode(".jpg")``, OpenCV's default
  4:2:0 chroma subsampling), decoded again (the reader: ``tf.image.decode_jpeg``; here OpenCV's
  decoder, see docs/features.md for how far the two decoders are apart);
* back to pixels (the reader): ``(q * float32(1 / 255) - 0.5) * 2 * 20``.

docs/features.md cites the files and lines.
"""

from __future__ import annotations

import numpy as np

from i3d_convert.errors import I3DConvertError

#: FlowToImageCalculator's options in the Kinetics graph: the flow range kept, in pixels.
FLOW_MIN, FLOW_MAX = -20.0, 20.0
#: OpenCvImageEncoderCalculator's quality in the Kinetics graph.
JPEG_QUALITY = 100


def flow_to_image(flow: np.ndarray) -> np.ndarray:
    """float ``[..., H, W, 2]`` flow in pixels -> uint8 ``[..., H, W, 3]`` image ``(x, y, 0)``."""
    low, high = np.float32(FLOW_MIN), np.float32(FLOW_MAX)
    res = (np.asarray(flow, dtype=np.float32) - low) / (high - low)
    quantised = (np.clip(res, 0, 1) * np.float32(255)).astype(np.uint8)  # C++ static_cast: truncation
    return np.concatenate([quantised, np.zeros(quantised.shape[:-1] + (1,), np.uint8)], axis=-1)


def image_to_flow(image: np.ndarray) -> np.ndarray:
    """uint8 ``[..., H, W, 3]`` -> float32 ``[..., H, W, 2]`` flow in pixels, as the reader does
    (``convert_image_dtype`` = ``q * float32(1/255)``, then ``(f - 0.5) * 2 * 20``)."""
    f = image[..., :2].astype(np.float32) * np.float32(1 / 255)
    return (f - np.float32(0.5)) * np.float32(2) * np.float32(FLOW_MAX)


def jpeg_round_trip(rgb: np.ndarray, quality: int = JPEG_QUALITY) -> np.ndarray:
    """uint8 RGB ``[H, W, 3]`` -> the same image after OpenCV's JPEG encoder (``quality``) and decoder."""
    import cv2  # noqa: PLC0415  (opencv is in the [video] extra)

    ok, data = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise I3DConvertError("OpenCV could not encode a JPEG")
    return np.ascontiguousarray(cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1])


def stored_flow(flow: np.ndarray) -> np.ndarray:
    """float32 ``[T, H, W, 2]`` TV-L1 fields -> what MediaPipe's reader returns for them (pixels)."""
    images = flow_to_image(flow)
    return image_to_flow(np.stack([jpeg_round_trip(image) for image in images]))
