"""FVD statistics of a whole source (array file, folder or manifest of videos), on one process or under torchrun.

Videos are cut into fixed global batches of ``batch_size`` consecutive indices; rank ``r`` of
``W`` computes batches ``r, r + W, ...`` (the batches' contents never depend on ``W``), every
rank gathers all per-video features, and the float64 sums are accumulated in index order, one
batch at a time. So 1 or N processes give the same stats bit for bit (with the same per-process
thread count). Results are cached by content (the input bytes, the weights file's sha256, the protocol
and the clip options) under ``<cache>/fvd-stats/``, written atomically and checked on load; a cached
result is returned without loading the network. Cache entries keep the per-video features (an entry
without them is recomputed when they are asked for).
The metadata records every setting that changes the features: protocol, weights, ``frames``,
``clip``, ``seed``, ``input_range``, ``source_resolutions`` and ``clip_lengths`` (the clip lengths
that reached the network).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from i3d_convert.errors import I3DConvertError
from i3d_convert import distributed

from i3d_convert.weights.factory import source_sha256

from .compute import BATCH_SIZE, FVDFeatures
from .network import fvd_weights_path
from .inputs import ClipOptions, VideoSet, select_clips
from .protocols import get_protocol
from .stats import STATS_FORMAT, FVDStats, load_stats, save_stats


@dataclass(frozen=True)
class StatsJob:
    """What to compute: ``source`` (array ``.npy``/``.npz``, video file, folder or manifest) under
    ``protocol`` with ``weights`` (None: the cache), clips per ``clips``; ``device``: ``auto``,
    ``cpu``, ``cuda`` (this rank's GPU) or ``cuda:N``; ``cache``: reuse/write the content-keyed cache;
    ``compile_pools``: compiled max pools where they are the same bits and faster (not part of the cache key);
    ``keep_features``: the stats keep the per-video features (:attr:`FVDStats.features`)."""

    source: Path
    protocol: str = "reference"
    weights: Optional[Path] = None
    clips: ClipOptions = field(default_factory=ClipOptions)
    input_range: Optional[str] = None
    device: str = "auto"
    batch_size: int = BATCH_SIZE
    cache: bool = True
    compile_pools: bool = False
    keep_features: bool = False


def cache_key(job: StatsJob, videos: VideoSet, count: int, weights_sha256: str) -> str:
    """sha256 of everything the stats depend on: input bytes, weights file, protocol, clip options."""
    recipe = {"format": STATS_FORMAT, "inputs": videos.content_sha256(count), "count": count,
              "input_range": videos.input_range, "weights_file": weights_sha256,
              "protocol": get_protocol(job.protocol).describe(), "clips": asdict(job.clips)}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()


def cache_path(key: str) -> Path:
    from i3d_convert.weights.releases import cache_dir

    return cache_dir() / "fvd-stats" / f"{key}.npz"


def _cached(key: str, need_features: bool) -> Optional[FVDStats]:
    path = cache_path(key)
    if not path.is_file():
        return None
    try:
        stats = load_stats(path)
    except I3DConvertError as exc:
        warnings.warn(f"ignoring a bad cached FVD stats file ({exc}); recomputing", stacklevel=3)
        return None
    if stats.metadata.get("cache_key") != key:
        warnings.warn(f"{path}: cached stats record another key; recomputing", stacklevel=3)
        return None
    if need_features and stats.features is None:
        return None  # written before the cache kept features
    return stats


def _batch_features(extractor: FVDFeatures, videos: VideoSet, indices: range,
                    clips: ClipOptions) -> List[Tuple[np.ndarray, str, int]]:
    """Per video of ``indices``: (features [K, 400] float32, "HxW", clip length). One forward for the batch when
    every clip has the same shape, else one per video (fixed by the batch's contents alone)."""
    max_frames = clips.frames if clips.clip == "first" else None
    cut = [select_clips(videos.read(i, max_frames), i, clips, videos.name(i)) for i in indices]
    if len({c.shape[1:] for c in cut}) == 1:
        features = extractor(np.concatenate(cut))
        split = np.split(features, np.cumsum([len(c) for c in cut])[:-1])
    else:
        split = [extractor(c) for c in cut]
    return [(f, f"{c.shape[2]}x{c.shape[3]}", int(c.shape[1])) for f, c in zip(split, cut)]


def _gather(context: distributed.DistContext, mine: Dict[int, list]) -> Dict[int, list]:
    if not context.distributed:
        return mine
    import torch.distributed as dist

    everything: List[Optional[Dict[int, list]]] = [None] * context.world_size
    dist.all_gather_object(everything, mine)
    return {k: v for part in everything for k, v in (part or {}).items()}


def compute_stats(job: StatsJob) -> FVDStats:
    """The :class:`FVDStats` of ``job.source`` (every rank returns the same object under torchrun)."""
    context = distributed.context_from_environment()
    device = distributed.select_device(context, job.device)
    # Joined once per process and left at exit: ``fvd A B`` computes two sets, and a group destroyed
    # and joined again in one torchrun run could read the first group's stale gloo address from the
    # store (rank 1 then saw "connection refused", or both ranks waited forever).
    distributed.start(context, device, until_exit=True)
    return _compute(job, context, device)


def _compute(job: StatsJob, context: distributed.DistContext, device) -> FVDStats:
    videos = VideoSet(job.source, job.input_range)
    count = len(videos) if job.clips.num_videos is None else job.clips.num_videos
    if count > len(videos):
        raise I3DConvertError(f"num_videos={count} but the source holds {len(videos)} videos", job.source)
    if count < 2:
        raise I3DConvertError(f"FVD needs at least 2 videos, the source holds {count}", job.source)
    weights = fvd_weights_path(job.weights)
    key = cache_key(job, videos, count, source_sha256(weights)) if job.cache else None
    if key is not None:
        cached = _cached(key, job.keep_features)
        if cached is not None:
            return cached if job.keep_features else cached.drop_features()
    extractor = FVDFeatures(job.protocol, weights, device=device, batch_size=job.batch_size,
                            compile_pools=job.compile_pools)
    batches = [range(s, min(s + job.batch_size, count)) for s in range(0, count, job.batch_size)]
    mine = {b: _batch_features(extractor, videos, batches[b], job.clips) for b in distributed.shard(range(len(batches)), context)}
    gathered = _gather(context, mine)
    meta = extractor.metadata(frames=job.clips.frames, clip=job.clips.clip, seed=job.clips.seed, num_videos=count,
                              input_range=videos.input_range, source=str(job.source), cache_key=key)
    stats = FVDStats(metadata={**meta, "source_resolutions": []}, keep_features=True)
    resolutions, lengths = set(), set()
    for b in range(len(batches)):
        stats.update(np.concatenate([f for f, _, _ in gathered[b]]))
        resolutions.update(r for _, r, _ in gathered[b])
        lengths.update(t for _, _, t in gathered[b])
    stats.metadata["source_resolutions"] = sorted(resolutions)
    stats.metadata["clip_lengths"] = sorted(lengths)
    if key is not None and context.is_main:
        path = cache_path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_stats(stats, path, overwrite=True)
    distributed.barrier(context)
    return stats if job.keep_features else stats.drop_features()


__all__ = ["StatsJob", "compute_stats", "cache_key", "cache_path"]
