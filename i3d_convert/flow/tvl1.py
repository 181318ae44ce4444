"""TV-L1 optical-flow input for I3D's flow stream (DeepMind's kinetics-i3d recipe).

Recipe (kinetics-i3d README): convert frames to grayscale, run TV-L1 optical flow
(OpenCV ``cv2.optflow.DualTVL1OpticalFlow``, opencv-contrib), truncate the pixel
displacements to [-20, 20], rescale to [-1, 1] (divide by 20), keep the two channels
(x, y), use the same spatial crop as the RGB stream.

Flow ``t`` is computed from frame ``t`` to frame ``t + 1`` (``prev=frame[t]``,
``next=frame[t+1]``), so ``T`` frames give ``T - 1`` flows.  Channel 0 is the
horizontal displacement x (positive = content moves right), channel 1 the vertical
displacement y (positive = content moves down), in pixels.

Depends only on numpy and cv2 (opencv-contrib-python[-headless] for ``cv2.optflow``).
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from typing import Optional

import numpy as np

from i3d_convert.errors import I3DConvertError

__all__ = [
    "FLOW_BOUND",
    "TVL1Params",
    "to_gray",
    "tvl1_flow",
    "tvl1_flow_pair",
    "flow_to_input",
    "pad_last",
]

#: Truncation bound in pixels used by DeepMind (flow is clipped to [-20, 20] then /20).
FLOW_BOUND: float = 20.0


@dataclass(frozen=True)
class TVL1Params:
    """Parameters of OpenCV's Dual TV-L1 optical flow (``cv2.optflow.DualTVL1OpticalFlow``).

    The defaults are OpenCV's own defaults (identical in OpenCV 3.x/4.x/5.x
    ``DualTVL1OpticalFlow_create()``), which is what DeepMind's README points to
    ("TV-L1 optical flow ... OpenCV") and what most public I3D flow pipelines use.

    Attributes:
        tau: time step of the numerical scheme.
        lambda_: data-term weight (smaller -> smoother flow). OpenCV name ``lambda``.
        theta: weight of the coupling term between the two sub-problems.
        nscales: number of pyramid scales.
        warps: number of warpings per scale.
        epsilon: stopping threshold of the inner iterations.
        inner_iterations: inner iterations per warp.
        outer_iterations: outer iterations per warp.
        scale_step: pyramid down-scaling factor.
        gamma: weight of the illumination-change term (0 = none).
        median_filtering: median-filter kernel size applied to the flow (OpenCV default 5).
        use_initial_flow: start from a given flow (never used here).
    """

    tau: float = 0.25
    lambda_: float = 0.15
    theta: float = 0.3
    nscales: int = 5
    warps: int = 5
    epsilon: float = 0.01
    inner_iterations: int = 30
    outer_iterations: int = 10
    scale_step: float = 0.8
    gamma: float = 0.0
    median_filtering: int = 5
    use_initial_flow: bool = False

    def create(self):
        """Build an OpenCV ``cv2.optflow.DualTVL1OpticalFlow`` object with these parameters."""
        cv2 = _cv2()
        if not hasattr(cv2, "optflow"):
            raise I3DConvertError(
                "cv2.optflow is missing: install opencv-contrib-python(-headless), "
                "and make sure plain opencv-python is not installed over it"
            )
        return cv2.optflow.DualTVL1OpticalFlow_create(
            tau=self.tau,
            lambda_=self.lambda_,
            theta=self.theta,
            nscales=self.nscales,
            warps=self.warps,
            epsilon=self.epsilon,
            innnerIterations=self.inner_iterations,  # sic: OpenCV's keyword is misspelt
            outerIterations=self.outer_iterations,
            scaleStep=self.scale_step,
            gamma=self.gamma,
            medianFiltering=self.median_filtering,
            useInitialFlow=self.use_initial_flow,
        )

    def replace(self, **changes) -> "TVL1Params":
        """Return a copy with some fields changed."""
        return dataclasses.replace(self, **changes)


def _cv2():
    try:
        import cv2
    except ImportError:
        raise I3DConvertError('TV-L1 flow needs OpenCV: pip install "i3d-convert[video]" '
                              "(opencv-contrib-python-headless)") from None
    return cv2


@contextlib.contextmanager
def portable_opencv():
    """Run OpenCV's portable code path inside the block: ``cv2.setUseOptimized(False)``, restored after.

    OpenCV's default path hands the pyramid's float ``resize`` to Intel IPP and runs ``remap``'s
    AVX2 kernel with fused multiply-adds; both round differently from OpenCV's own C++ code, and
    IPP's rounding is closed and may change with the CPU. TV-L1 turns such ulp differences into
    flows that differ by about 0.01 px on average and 0.2-0.4 px at the 99.9th percentile (measured:
    docs/features.md). The portable path gives the same flow on every x86-64 machine, equal bit for
    bit to the PyTorch port, at about the same speed. The flag is process-wide: do not run other
    OpenCV work in other threads meanwhile.
    """
    cv2 = _cv2()
    was = cv2.useOptimized()
    cv2.setUseOptimized(False)
    try:
        yield
    finally:
        cv2.setUseOptimized(was)


def to_gray(frames: np.ndarray) -> np.ndarray:
    """Convert frames to 8-bit grayscale.

    Args:
        frames: uint8 ``[T, H, W]`` (already gray, returned as is) or ``[T, H, W, 3]``
            in **RGB** channel order (values 0..255).

    Returns:
        uint8 ``[T, H, W]``, ITU-R BT.601 luma (``cv2.COLOR_RGB2GRAY``:
        0.299 R + 0.587 G + 0.114 B, rounded).
    """
    frames = np.asarray(frames)
    if frames.dtype != np.uint8:
        raise I3DConvertError(f"frames must be uint8 (0..255), got {frames.dtype}")
    if frames.ndim == 3:
        return np.ascontiguousarray(frames)
    if frames.ndim == 4 and frames.shape[-1] == 3:
        cv2 = _cv2()
        return np.stack([cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY) for f in frames])
    raise I3DConvertError(f"frames must be [T,H,W] or [T,H,W,3], got shape {frames.shape}")


def tvl1_flow_pair(
    prev_gray: np.ndarray,
    next_gray: np.ndarray,
    params: Optional[TVL1Params] = None,
    _algo=None,
) -> np.ndarray:
    """TV-L1 flow from one uint8 gray ``[H, W]`` image to the next.

    Returns:
        float32 ``[H, W, 2]`` displacement in pixels, channel 0 = x, channel 1 = y,
        such that ``prev(y, x) ~= next(y + fy, x + fx)``.
    """
    algo = _algo if _algo is not None else (params or TVL1Params()).create()
    with portable_opencv():
        flow = algo.calc(prev_gray, next_gray, None)
    return np.asarray(flow, dtype=np.float32)


def tvl1_flow(
    frames_gray_or_rgb: np.ndarray,
    params: Optional[TVL1Params] = None,
    workers: int = 1,
) -> np.ndarray:
    """TV-L1 optical flow between consecutive frames.

    Args:
        frames_gray_or_rgb: uint8 ``[T, H, W]`` grayscale or ``[T, H, W, 3]`` RGB
            frames (0..255), ``T >= 2``. RGB is converted with :func:`to_gray`.
        params: TV-L1 parameters; default :class:`TVL1Params()` (OpenCV defaults).
        workers: number of threads computing frame pairs in parallel (OpenCV's
            TV-L1 is essentially single-threaded and releases the GIL; each thread
            gets its own solver). The result does not depend on ``workers``.

    Returns:
        float32 ``[T - 1, H, W, 2]`` raw flow in pixels (unbounded), ``[..., 0]`` = x
        (horizontal, + = right), ``[..., 1]`` = y (vertical, + = down); entry ``t`` is
        the flow from frame ``t`` to frame ``t + 1``.
    """
    gray = to_gray(frames_gray_or_rgb)
    if gray.shape[0] < 2:
        raise I3DConvertError(f"flow needs at least 2 frames, got {gray.shape[0]}")
    params = params or TVL1Params()
    n = gray.shape[0] - 1
    out = np.empty((n,) + gray.shape[1:] + (2,), dtype=np.float32)
    workers = max(1, min(int(workers), n))
    if workers == 1:
        algo = params.create()
        for t in range(n):
            out[t] = tvl1_flow_pair(gray[t], gray[t + 1], _algo=algo)
        return out

    import threading
    from concurrent.futures import ThreadPoolExecutor

    local = threading.local()

    def work(t: int) -> None:
        if not hasattr(local, "algo"):
            local.algo = params.create()
        out[t] = tvl1_flow_pair(gray[t], gray[t + 1], _algo=local.algo)

    # The flag is process-wide: held around all threads, so that one pair finishing cannot restore
    # the default path while another is still computing (each pair's own scope then keeps it off).
    with portable_opencv(), ThreadPoolExecutor(max_workers=workers) as ex:
        list(ex.map(work, range(n)))
    return out


def flow_to_input(flow: np.ndarray, bound: float = FLOW_BOUND) -> np.ndarray:
    """DeepMind's flow-stream input scaling: clip to ``[-bound, bound]`` then divide by ``bound``.

    Args:
        flow: float array ``[..., 2]`` of pixel displacements (any leading shape,
            e.g. ``[T-1, H, W, 2]``).
        bound: truncation bound in pixels (20 in DeepMind's recipe).

    Returns:
        float32 array of the same shape, values in ``[-1, 1]``.
    """
    flow = np.asarray(flow, dtype=np.float32)
    return np.clip(flow, -bound, bound) / np.float32(bound)


def pad_last(flow: np.ndarray, n: int = 1) -> np.ndarray:
    """Repeat the last flow frame ``n`` times along axis 0 (``[T-1,...] -> [T-1+n,...]``).

    For callers that need exactly as many flow frames as RGB frames (e.g. a fixed
    clip length shared by both streams). Prefer decoding one extra RGB frame when
    the source video has it.
    """
    flow = np.asarray(flow)
    if n <= 0:
        return flow
    return np.concatenate([flow, np.repeat(flow[-1:], n, axis=0)], axis=0)
