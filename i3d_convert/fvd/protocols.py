"""Named FVD protocols: the reference pipeline and presets reproducing common PyTorch pipelines.

Every protocol runs this package's exact FVD network (TF-Hub's ``i3d-kinetics-400/1`` =
DeepMind's ``rgb_scratch``; 400 time-averaged logits) and differs only in the documented steps
below. Input to :meth:`Protocol.preprocess`: ``[N, T, H, W, 3]`` RGB on the [0, 255] scale
(uint8 or float); output: ``[N, 3, T, 224, 224]`` float32, the network's input.
See docs/fvd.md for each protocol's sources and its measured drift from ``reference``, and
docs/fvd-protocols.md for the code each step was read from (repository, path, commit, line).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Dict, Optional

import numpy as np
import torch
import torch.nn.functional as F

from i3d_convert.architecture import MIN_LOGITS_FRAMES
from i3d_convert.errors import I3DConvertError
from i3d_convert.fvd.network import FVD_RESOLUTION, preprocess_for_fvd

#: The network's smallest clip (Logits' [2, 7, 7] average pool needs 2 time steps at Mixed_5c), under
#: the name callers import.
MIN_FRAMES = MIN_LOGITS_FRAMES


@dataclass(frozen=True)
class Protocol:
    """One FVD pipeline.

    resize: ``tf1`` (TF1 legacy ``resize_bilinear`` straight to 224x224, the reference),
        ``torch`` (``F.interpolate`` bilinear, ``align_corners=False``, straight to 224x224) or
        ``torch_shorter_crop`` (that op to shorter side 224, longer side ``ceil``, then a centre crop).
    value_map: ``reference`` (resize on [0, 255], then ``2x/255 - 1``), ``videogpt`` (``x/255``,
        resize, crop, ``- 0.5``, ``* 2``) or ``rescale_first`` (``x/255*2 - 1``, then resize).
    bn_eps: the network's batch-norm epsilon (TF: 1e-3; the piergiaj-derived ports: 1e-5).
    ddof: covariance divisor ``n - ddof`` (1: TF-GAN, N-1; 0: StyleGAN-V's ``FeatureStats``, /N).
    compute_dtype: dtype of the matrix square roots and the sum (``float64``; ``float32`` as the
        torch ports compute it). result_dtype: the returned value's dtype (TF-GAN casts to float32).
    loader_resolution: None, or cd-fvd's video loader first (``load_videos(..., resolution=R)``):
        ``x/255``, torch bilinear with ``antialias=True`` to shorter side R (longer side ``ceil``),
        centre crop RxR, ``(x*255).byte()`` (truncation), before the protocol's own resize.
    """

    name: str
    resize: str
    value_map: str
    bn_eps: float
    ddof: int
    compute_dtype: str
    result_dtype: str
    summary: str
    loader_resolution: Optional[int] = None

    def preprocess(self, videos: "np.ndarray | torch.Tensor") -> torch.Tensor:
        """``[N, T, H, W, 3]`` on [0, 255] -> ``[N, 3, T, 224, 224]`` float32 (the network's input)."""
        x = videos if isinstance(videos, torch.Tensor) else torch.from_numpy(np.asarray(videos))
        if x.dim() != 5 or x.shape[-1] != 3:
            raise I3DConvertError(f"videos must be [N, T, H, W, 3] RGB, got shape {list(x.shape)}")
        if x.shape[1] < MIN_FRAMES:
            raise I3DConvertError(f"videos have {x.shape[1]} frames; the FVD network needs at least {MIN_FRAMES}")
        if self.loader_resolution is not None:
            x = _cdfvd_loader_frames(x, self.loader_resolution)
        if self.resize == "tf1":
            return preprocess_for_fvd(x)
        n, t, h, w, _ = x.shape
        frames = x.to(torch.float32).reshape(n * t, h, w, 3).permute(0, 3, 1, 2)
        if self.value_map == "videogpt":
            frames = _resize(frames / 255.0, self.resize) - 0.5
            frames = frames * 2
        elif self.value_map == "rescale_first":
            frames = _resize(frames / 255.0 * 2 - 1, self.resize)
        else:
            frames = 2.0 * _resize(frames, self.resize) / 255.0 - 1.0
        # NDHWC memory (one copy), the layout the model's inference path runs on.
        return frames.reshape(n, t, 3, FVD_RESOLUTION, FVD_RESOLUTION).permute(0, 2, 1, 3, 4).contiguous(
            memory_format=torch.channels_last_3d)

    def describe(self) -> Dict[str, object]:
        described = asdict(self)
        if self.loader_resolution is None:
            del described["loader_resolution"]  # keeps the stats cache keys of presets older than the field
        return described


def _resize(frames: torch.Tensor, mode: str) -> torch.Tensor:
    """``[F, 3, H, W]`` float32 -> ``[F, 3, 224, 224]`` with torch's bilinear (half-pixel centres)."""
    size = FVD_RESOLUTION
    if mode == "torch":
        return F.interpolate(frames, size=(size, size), mode="bilinear", align_corners=False)
    return _shorter_side_centre_crop(frames, size, antialias=False)


def _shorter_side_centre_crop(frames: torch.Tensor, size: int, antialias: bool) -> torch.Tensor:
    """``[F, C, H, W]`` -> ``[F, C, size, size]``: bilinear to shorter side ``size``, centre crop."""
    h, w = frames.shape[-2:]
    scale = size / min(h, w)  # VideoGPT's and cd-fvd's preprocess, float for float
    target = (size, math.ceil(w * scale)) if h < w else (math.ceil(h * scale), size)
    frames = F.interpolate(frames, size=target, mode="bilinear", align_corners=False, antialias=antialias)
    top, left = (frames.shape[-2] - size) // 2, (frames.shape[-1] - size) // 2
    return frames[..., top:top + size, left:left + size]


def _cdfvd_loader_frames(videos: torch.Tensor, resolution: int) -> torch.Tensor:
    """cd-fvd's loader: ``[N, T, H, W, 3]`` on [0, 255] -> ``[N, T, R, R, 3]`` uint8 (see ``loader_resolution``)."""
    n, t, h, w, _ = videos.shape
    frames = videos.to(torch.float32).reshape(n * t, h, w, 3).permute(0, 3, 1, 2) / 255.0
    frames = _shorter_side_centre_crop(frames, resolution, antialias=True)
    frames = (frames * 255).to(torch.uint8)  # torch's float -> uint8 cast truncates, as cd-fvd's .byte()
    return frames.permute(0, 2, 3, 1).reshape(n, t, resolution, resolution, 3)


PROTOCOLS: Dict[str, Protocol] = {p.name: p for p in (
    Protocol("reference", "tf1", "reference", 1e-3, 1, "float64", "float32",
             "google-research frechet_video_distance: TF1 resize_bilinear to 224x224, 2x/255-1, "
             "TF-Hub logits, TF-GAN distance (N-1, float64, returned as float32)"),
    Protocol("videogpt", "torch_shorter_crop", "videogpt", 1e-5, 1, "float32", "float32",
             "VideoGPT (and JunyaoHu's videogpt method): torch bilinear shorter side to 224 + centre crop, "
             "(x/255-0.5)*2, batch-norm eps 1e-5, N-1, TF-GAN square roots in float32"),
    Protocol("tats", "torch", "reference", 1e-5, 1, "float32", "float32",
             "TATS: torch bilinear straight to 224x224, 2x/255-1, batch-norm eps 1e-5, N-1, float32"),
    Protocol("stylegan-v", "torch", "rescale_first", 1e-3, 0, "float64", "float64",
             "StyleGAN-V fvd2048_16f: x/255*2-1, resize inside its TorchScript (its code is not public: torch "
             "bilinear to 224x224 without antialias assumed), biased /N covariance, float64"),
    Protocol("common-metrics-styleganv", "torch_shorter_crop", "videogpt", 1e-3, 1, "float64", "float64",
             "JunyaoHu common_metrics_on_video_quality, styleganv method: torch bilinear shorter side to 224 + "
             "centre crop, (x/255-0.5)*2, StyleGAN-V's TorchScript (batch-norm eps 1e-3), np.cov (N-1), "
             "scipy sqrtm in float64"),
    Protocol("cd-fvd", "torch", "reference", 1e-5, 0, "float64", "float64",
             "cd-fvd i3d on arrays (compute_fvd, add_real_stats): torch bilinear straight to 224x224, 2x/255-1, "
             "TATS port (batch-norm eps 1e-5), biased /N covariance, scipy sqrtm in float64"),
    *(Protocol(f"cd-fvd-{size}", "torch", "reference", 1e-5, 0, "float64", "float64",
               f"cd-fvd i3d on video folders (load_videos resolution={size}, its precomputed stats): antialiased "
               f"shorter side to {size}, centre crop, truncated to uint8, then as cd-fvd", loader_resolution=size)
      for size in (128, 256)),
)}


def get_protocol(name: "str | Protocol") -> Protocol:
    """The preset called ``name`` (a :class:`Protocol` is returned as is)."""
    if isinstance(name, Protocol):
        return name
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise I3DConvertError(f"unknown FVD protocol {name!r}; choose one of {', '.join(PROTOCOLS)}") from None


__all__ = ["MIN_FRAMES", "Protocol", "PROTOCOLS", "get_protocol"]
