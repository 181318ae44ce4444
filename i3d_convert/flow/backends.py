"""TV-L1 flow of a frame sequence on a chosen backend: OpenCV (reference) or the PyTorch port.

Two algorithms: ``"opencv-cpu"`` (default), OpenCV's CPU ``DualTVL1OpticalFlow``, on either backend;
``"opencv-cuda"``, OpenCV's ``cuda::OpticalFlowDual_TVL1`` (a different algorithm, see
:mod:`i3d_convert.flow.tvl1_cuda_variant`), on the torch backend only (opencv-python has no CUDA).

``torch``: :func:`i3d_convert.flow.tvl1_torch.tvl1_flow_batch`, batched over frame pairs, on any
device. ``opencv``: ``cv2.optflow.DualTVL1OpticalFlow`` pair by pair (:func:`tvl1.tvl1_flow`).
The default is the faster of the two on the device in use, as measured by bench/flow.py
(docs/benchmarks.md): OpenCV on the CPU, the torch port on CUDA.
"""

from __future__ import annotations

from typing import Optional, Tuple, Union

import numpy as np
import torch

from i3d_convert.errors import I3DConvertError
from i3d_convert.flow import tvl1
from i3d_convert.flow.tvl1 import TVL1Params
from i3d_convert.flow.tvl1_cuda_variant import TVL1CudaParams

__all__ = ["ALGORITHMS", "BACKENDS", "default_backend", "tvl1_flow"]

BACKENDS = ("torch", "opencv")
#: OpenCV's CPU Dual TV-L1 and OpenCV's CUDA one (a different algorithm: docs/features.md).
ALGORITHMS = ("opencv-cpu", "opencv-cuda")

#: Frame pairs per torch batch when ``batch_size`` is not given (CPU; CUDA sizes by memory): the
#: fastest eager batch on 2 CPU cores (docs/benchmarks.md: 4 beat 1, 8 and 16 at 224x224 and 256x340).
CPU_BATCH = 4
#: Bytes of device memory one 1-pixel pair needs at the finest level (about 40 float32 buffers).
_BYTES_PER_PIXEL = 40 * 4


def default_backend(device: Union[str, torch.device, None] = None) -> str:
    """``"torch"`` on a CUDA device, ``"opencv"`` on the CPU (faster there: docs/benchmarks.md)."""
    return "torch" if device is not None and torch.device(device).type == "cuda" else "opencv"


def _batch_for(device: torch.device, height: int, width: int) -> int:
    if device.type != "cuda":
        return CPU_BATCH
    free, _ = torch.cuda.mem_get_info(device)
    return max(1, min(256, int(0.5 * free) // (_BYTES_PER_PIXEL * height * width)))


def _algorithm_params(params: Union[TVL1Params, TVL1CudaParams, None],
                      algorithm: Optional[str]) -> Tuple[str, Union[TVL1Params, TVL1CudaParams]]:
    """``(algorithm, params)`` with the algorithm named or read from the parameters' class."""
    if algorithm is None:
        algorithm = "opencv-cuda" if isinstance(params, TVL1CudaParams) else "opencv-cpu"
    if algorithm not in ALGORITHMS:
        raise I3DConvertError(f"flow algorithm must be one of {', '.join(ALGORITHMS)}, got {algorithm!r}")
    if algorithm == "opencv-cuda":
        if params is None or isinstance(params, TVL1Params):
            params = TVL1CudaParams.from_cpu(params or TVL1Params())
    elif isinstance(params, TVL1CudaParams):
        raise I3DConvertError("TVL1CudaParams are the opencv-cuda algorithm's; pass TVL1Params for opencv-cpu")
    return algorithm, params


def tvl1_flow(frames: Union[np.ndarray, torch.Tensor], params: Union[TVL1Params, TVL1CudaParams, None] = None,
              backend: Optional[str] = None, device: Union[str, torch.device, None] = None,
              batch_size: Optional[int] = None, algorithm: Optional[str] = None,
              compile: bool = False) -> np.ndarray:
    """TV-L1 optical flow between consecutive frames (DeepMind's kinetics-i3d flow).

    Args:
        frames: uint8 ``[T, H, W]`` gray or ``[T, H, W, 3]`` RGB (numpy or a CPU tensor), ``T >= 2``.
        params: OpenCV's parameters: :class:`TVL1Params` (default ``TVL1Params()``, OpenCV's
            defaults), or for ``opencv-cuda`` :class:`~i3d_convert.flow.tvl1_cuda_variant.TVL1CudaParams`
            (``TVL1Params`` are mapped by ``TVL1CudaParams.from_cpu``; the defaults map onto the defaults).
        backend: ``"torch"`` or ``"opencv"``; ``None`` or ``"auto"`` picks :func:`default_backend`
            for ``device`` (``"torch"`` for ``opencv-cuda``). Both give the same flow, bit for bit
            (docs/features.md), so the choice is one of speed.
        device: torch backend only: where the flow runs (default CPU).
        batch_size: torch backend only: pairs per batch (default 4 on the CPU; on CUDA as many as
            half the free memory holds).
        algorithm: ``"opencv-cpu"`` or ``"opencv-cuda"``; ``None``: ``opencv-cuda`` for
            ``TVL1CudaParams``, else ``opencv-cpu``. ``opencv-cuda`` runs on the torch backend only.
        compile: torch backend, ``opencv-cpu``: run the iterations through ``torch.compile``
            (the same flow bit for bit; faster than OpenCV on a 2-core CPU where the eager port is
            slower, docs/benchmarks.md; the first call of a process compiles for about a minute and
            needs a C++ compiler).

    Returns:
        float32 ``[T - 1, H, W, 2]`` in pixels: channel 0 = x (+ right), 1 = y (+ down); field
        ``t`` is the flow from frame ``t`` to frame ``t + 1``.
    """
    algorithm, params = _algorithm_params(params, algorithm)
    if backend in (None, "auto"):
        backend = "torch" if algorithm == "opencv-cuda" else default_backend(device)
    if backend not in BACKENDS:
        raise I3DConvertError(f"flow backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "opencv" and algorithm == "opencv-cuda":
        raise I3DConvertError("flow algorithm opencv-cuda runs on the torch backend only "
                              "(opencv-python wheels have no CUDA): use backend='torch'")
    if isinstance(frames, torch.Tensor):
        frames = frames.cpu().numpy()
    if backend == "opencv":
        return tvl1.tvl1_flow(frames, params)
    if algorithm == "opencv-cuda":
        from i3d_convert.flow.tvl1_cuda_variant import tvl1_cuda_flow_batch as tvl1_flow_batch
    else:
        from i3d_convert.flow.tvl1_torch import tvl1_flow_batch

    gray = tvl1.to_gray(frames)
    if gray.shape[0] < 2:
        raise I3DConvertError(f"flow needs at least 2 frames, got {gray.shape[0]}")
    dev = torch.device(device) if device is not None else torch.device("cpu")
    pairs = gray.shape[0] - 1
    step = batch_size or _batch_for(dev, gray.shape[1], gray.shape[2])
    if step < 1:
        raise I3DConvertError(f"batch_size must be at least 1, got {batch_size}")
    out = np.empty((pairs,) + gray.shape[1:] + (2,), dtype=np.float32)
    frames_t = torch.from_numpy(gray)
    extra = {"compile": True} if compile and algorithm == "opencv-cpu" else {}
    for start in range(0, pairs, step):
        stop = min(start + step, pairs)
        chunk = frames_t[start:stop + 1].to(dev)
        out[start:stop] = tvl1_flow_batch(chunk[:-1], chunk[1:], params, **extra).cpu().numpy()
    return out
