"""Named FVD protocols: the reference pipeline and presets reproducing common PyTorch pipelines.

Every protocol runs this package's exact FVD network (TF-Hub's ``i3d-kinetics-400/1`` =
DeepMind's ``rgb_scratch``; 400 time-averaged logits) and differs only in the documented steps
below. Input to :meth:`Protocol.preprocess`: ``[N, T, H, W, 3]`` RGB on the [0, 255] scale
(uint8 or float); output: ``[N, 3, T, 224, 224]`` float32, the network's input.
See docs/fvd.md for each protocol's sources and its measured drift from ``reference``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Dict

import numpy as np
import torch
import torch.nn.functional as F

from i3d_convert.errors import I3DConvertError
from i3d_convert.integrations.fvd import FVD_RESOLUTION, preprocess_for_fvd

#: The network's smallest clip: Logits' [2, 7, 7] average pool needs 2 time steps at Mixed_5c.
from i3d_convert.architecture import MIN_LOGITS_FRAMES as MIN_FRAMES  # architecture.py's, under the name callers import


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
    """

    name: str
    resize: str
    value_map: str
    bn_eps: float
    ddof: int
    compute_dtype: str
    result_dtype: str
    summary: str

    def preprocess(self, videos: "np.ndarray | torch.Tensor") -> torch.Tensor:
        """``[N, T, H, W, 3]`` on [0, 255] -> ``[N, 3, T, 224, 224]`` float32 (the network's input)."""
        x = videos if isinstance(videos, torch.Tensor) else torch.from_numpy(np.asarray(videos))
        if x.dim() != 5 or x.shape[-1] != 3:
            raise I3DConvertError(f"videos must be [N, T, H, W, 3] RGB, got shape {list(x.shape)}")
        if x.shape[1] < MIN_FRAMES:
            raise I3DConvertError(f"videos have {x.shape[1]} frames; the FVD network needs at least {MIN_FRAMES}")
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
        return frames.reshape(n, t, 3, FVD_RESOLUTION, FVD_RESOLUTION).permute(0, 2, 1, 3, 4).contiguous()

    def describe(self) -> Dict[str, object]:
        return asdict(self)


def _resize(frames: torch.Tensor, mode: str) -> torch.Tensor:
    """``[F, 3, H, W]`` float32 -> ``[F, 3, 224, 224]`` with torch's bilinear (half-pixel centres)."""
    size = FVD_RESOLUTION
    if mode == "torch":
        return F.interpolate(frames, size=(size, size), mode="bilinear", align_corners=False)
    h, w = frames.shape[-2:]
    scale = size / min(h, w)  # VideoGPT's preprocess_single, float for float
    target = (size, math.ceil(w * scale)) if h < w else (math.ceil(h * scale), size)
    frames = F.interpolate(frames, size=target, mode="bilinear", align_corners=False)
    top, left = (frames.shape[-2] - size) // 2, (frames.shape[-1] - size) // 2
    return frames[..., top:top + size, left:left + size]


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
             "StyleGAN-V fvd2048_16f: x/255*2-1, resize inside its TorchScript (op unverified: torch bilinear "
             "to 224x224 here), biased /N covariance, float64"),
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
