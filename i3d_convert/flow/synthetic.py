"""Frame pairs with a known sub-pixel motion, for measuring optical flow against the truth."""

from __future__ import annotations

from typing import Tuple

import numpy as np

__all__ = ["textured_pair"]


def textured_pair(height: int, width: int, shift: Tuple[float, float] = (0.0, 0.0),
                  angle_deg: float = 0.0, zoom: float = 1.0, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """Two uint8 gray frames of a smooth random texture, the second moved by a similarity transform.

    The content point ``p`` of frame 0 is at ``T(p) = c + zoom * R(angle) (p - c) + shift`` in
    frame 1 (``c`` = image centre, x right, y down, angle clockwise on screen).

    Returns:
        ``(frames, flow)``: uint8 ``[2, H, W]`` and the true float32 flow ``[H, W, 2]`` (x, y) from
        frame 0 to frame 1, ``T(p) - p``.
    """
    import cv2

    rng = np.random.default_rng(seed)
    big = 4  # texture drawn at 4x resolution, then sampled: detail at every scale of the pyramid
    tex = rng.random((height * big + 64, width * big + 64)).astype(np.float32)
    tex = cv2.GaussianBlur(tex, (0, 0), 1.5 * big)
    tex = (tex - tex.min()) / (tex.max() - tex.min())

    def sample(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        mx = ((x + 0.5) * big - 0.5 + 32).astype(np.float32)
        my = ((y + 0.5) * big - 0.5 + 32).astype(np.float32)
        img = cv2.remap(tex, mx, my, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
        return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)

    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    a = np.deg2rad(angle_deg)
    rot = zoom * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    inv = np.linalg.inv(rot)
    # frame 1 at q shows the content of frame 0 at T^-1(q)
    qx, qy = xs - cx - shift[0], ys - cy - shift[1]
    src_x = cx + inv[0, 0] * qx + inv[0, 1] * qy
    src_y = cy + inv[1, 0] * qx + inv[1, 1] * qy
    frames = np.stack([sample(xs, ys), sample(src_x, src_y)])
    px, py = xs - cx, ys - cy
    flow_x = cx + rot[0, 0] * px + rot[0, 1] * py + shift[0] - xs
    flow_y = cy + rot[1, 0] * px + rot[1, 1] * py + shift[1] - ys
    return frames, np.stack([flow_x, flow_y], axis=-1).astype(np.float32)
