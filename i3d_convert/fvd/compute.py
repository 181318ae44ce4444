"""FVD from videos: the feature extractor, ``fvd(videos_a, videos_b)`` and a torchmetrics-style metric."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import numpy as np
import torch

from i3d_convert._version import __version__
from i3d_convert.errors import I3DConvertError, PathLike
from i3d_convert.fvd.network import fvd_i3d
from i3d_convert.weights.releases import FVD_RELEASE

from .inputs import check_videos, to_0_255
from .protocols import Protocol, get_protocol
from .stats import FVDStats, frechet_distance

#: Videos per forward pass, the one default of every FVD entry point (library, stats runner, CLI).
#: Only speed and memory depend on it; the features agree to float32 round-off across batch sizes.
BATCH_SIZE = 8

def weights_identity(model: torch.nn.Module, verified: bool) -> Dict[str, Any]:
    """``{"sha256": of the state_dict (:func:`~i3d_convert.weights.registry.state_dict_sha256`),
    "verified_against": "rgb_scratch crc32c" | None}`` of a model :func:`fvd_i3d` built."""
    return {"sha256": model.weights_sha256, "verified_against": f"{FVD_RELEASE} crc32c" if verified else None}


class FVDFeatures:
    """The FVD network under one protocol: ``extractor(videos [N, T, H, W, 3] on [0, 255]) -> [N, 400] float32``.

    ``weights``: any source :func:`~i3d_convert.fvd.network.fvd_i3d` reads (``None``:
    the cache); checked to be ``rgb_scratch``'s tensors unless ``verify=False``. ``compile_pools``:
    :meth:`~i3d_convert.models.i3d.InceptionI3d.compile_max_pools` (the same bits; speed only).
    """

    def __init__(self, protocol: "str | Protocol" = "reference", weights: Optional[PathLike] = None, *,
                 device: "str | torch.device" = "cpu", batch_size: int = BATCH_SIZE, verify: bool = True,
                 compile_pools: bool = False) -> None:
        if batch_size < 1:
            raise I3DConvertError(f"{{arg}} must be >= 1, got {batch_size}", argument="batch_size")
        self.protocol = get_protocol(protocol)
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.model = fvd_i3d(weights, verify=verify, bn_eps=self.protocol.bn_eps, device=self.device)
        self.weights = weights_identity(self.model, verify)
        if compile_pools:
            self.model.compile_max_pools()

    @torch.inference_mode()
    def __call__(self, videos: "np.ndarray | torch.Tensor") -> np.ndarray:
        out: List[np.ndarray] = []
        for start in range(0, len(videos), self.batch_size):
            x = self.protocol.preprocess(videos[start:start + self.batch_size]).to(self.device)
            out.append(self.model(x).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 400), np.float32)

    def metadata(self, **extra: Any) -> Dict[str, Any]:
        """What a stats file records about how its features were made."""
        return {"protocol": self.protocol.name, "weights": self.weights, "package_version": __version__, **extra}


def stats_from_videos(extractor: FVDFeatures, videos: np.ndarray, input_range: Optional[str] = None,
                      where: str = "videos") -> FVDStats:
    """:class:`FVDStats` of ``[N, T, H, W, 3]`` videos (uint8, or float in ``input_range``; detected if None)."""
    videos = check_videos(np.asarray(videos) if not isinstance(videos, torch.Tensor) else videos.cpu().numpy(), where)
    canonical = to_0_255(videos, input_range, where)
    stats = FVDStats(metadata=extractor.metadata(frames=int(videos.shape[1]), clip_lengths=[int(videos.shape[1])],
                                                 source_resolutions=[f"{videos.shape[2]}x{videos.shape[3]}"]))
    return stats.update(extractor(canonical))


def clip_lengths(metadata: Dict[str, Any]) -> Optional[List[int]]:
    """The clip lengths a set's features were made from (older stats files: their ``frames``), or None."""
    if metadata.get("clip_lengths"):
        return list(metadata["clip_lengths"])
    return [metadata["frames"]] if isinstance(metadata.get("frames"), int) else None


def check_same_clips(stats_a: FVDStats, stats_b: FVDStats, names: "tuple[str, str]" = ("set A", "set B")) -> None:
    """Raise unless both sets' features were made from clips of the same lengths (when both record them)."""
    lengths = [clip_lengths(s.metadata) for s in (stats_a, stats_b)]
    if None not in lengths and lengths[0] != lengths[1]:
        shown = [f"{', '.join(map(str, x))} frames" for x in lengths]
        raise I3DConvertError(f"the two sets' clips differ in length: {shown[0]} ({names[0]}) vs {shown[1]} "
                              f"({names[1]}); FVD compares clips of one length (pass --frames, or write both "
                              "stats files with the same --frames)")


def distance(stats_a: FVDStats, stats_b: FVDStats, protocol: "str | Protocol | None" = None) -> float:
    """FVD between two stats under their protocol (both must record the same protocol and weights, and
    clips of the same lengths)."""
    name = protocol if protocol is not None else stats_a.metadata.get("protocol", "reference")
    chosen = get_protocol(name)
    if stats_a.metadata.get("protocol", chosen.name) != chosen.name:
        raise I3DConvertError(f"stats were computed with protocol {stats_a.metadata.get('protocol')!r}, not {chosen.name!r}")
    for label, stats in (("first", stats_a), ("second", stats_b)):
        if stats.n < 2:
            raise I3DConvertError(f"the {label} set has {stats.n} video(s); FVD needs at least 2 per set")
    check_same_clips(stats_a, stats_b)
    value = frechet_distance(stats_a, stats_b, ddof=chosen.ddof, compute_dtype=np.dtype(chosen.compute_dtype))
    return float(np.asarray(value).astype(chosen.result_dtype))


def fvd(videos_a: np.ndarray, videos_b: np.ndarray, protocol: "str | Protocol" = "reference",
        weights: Optional[PathLike] = None, *, input_range: Optional[str] = None,
        device: "str | torch.device" = "cpu", batch_size: int = BATCH_SIZE) -> float:
    """The FVD between two sets of videos ``[N, T, H, W, 3]`` (N >= 2, T >= 9), uint8 or float in
    ``input_range`` (``"0-255"``, ``"0-1"``, ``"-1-1"``; detected when None). Returns a Python float
    (for ``reference``: TF-GAN's float32 value)."""
    extractor = FVDFeatures(protocol, weights, device=device, batch_size=batch_size)
    stats_a = stats_from_videos(extractor, videos_a, input_range, "videos_a")
    stats_b = stats_from_videos(extractor, videos_b, input_range, "videos_b")
    return distance(stats_a, stats_b)


class FVDMetric:
    """FVD as a metric object, torchmetrics style: ``update(videos, real=True|False)``, ``compute()``,
    ``reset()``, ``merge(other)`` (e.g. from another process). Videos as in :func:`fvd`."""

    def __init__(self, protocol: "str | Protocol" = "reference", weights: Optional[PathLike] = None, *,
                 input_range: Optional[str] = None, device: "str | torch.device" = "cpu", batch_size: int = BATCH_SIZE,
                 extractor: Optional[FVDFeatures] = None) -> None:
        self.extractor = extractor or FVDFeatures(protocol, weights, device=device, batch_size=batch_size)
        self.input_range = input_range
        self.reset()

    def reset(self) -> None:
        """Forget every video seen."""
        meta = self.extractor.metadata(source_resolutions=[])
        self.real, self.fake = FVDStats(metadata=meta), FVDStats(metadata=dict(meta))

    def update(self, videos: "np.ndarray | torch.Tensor", real: bool) -> None:
        """Add ``[N, T, H, W, 3]`` videos to the real or the generated set."""
        batch = stats_from_videos(self.extractor, videos, self.input_range, "real videos" if real else "generated videos")
        (self.real if real else self.fake).merge(batch)

    def merge(self, other: "FVDMetric") -> "FVDMetric":
        """Add another metric's videos (same protocol and weights) to this one."""
        self.real.merge(other.real)
        self.fake.merge(other.fake)
        return self

    def compute(self) -> float:
        """FVD between the generated and the real videos seen so far."""
        return distance(self.real, self.fake)


__all__ = ["FVDFeatures", "FVDMetric", "fvd", "distance", "stats_from_videos", "weights_identity", "clip_lengths",
           "check_same_clips"]
