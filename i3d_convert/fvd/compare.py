"""The FVD between two sources (stats files or videos) with the checks a user needs: what ``fvd`` runs.

Settings. A stats file records every setting that changes its features (protocol, weights,
``frames``, ``clip``, ``seed``, the clip lengths that reached the network, source resolutions).
Videos compared with a stats file are computed with the stats file's settings for every setting
the caller leaves unset (``None``), and a warning says which were taken; a setting given that
contradicts the stats file (another protocol, another clip length) is refused before any video is
read, naming both values. Taking the stats file's settings (rather than refusing) is what a user
who passes a precomputed reference set means, and it is how the protocol was already chosen.
After both sets exist, their protocol, weights, feature size and clip lengths must agree (else a
one-line :class:`~i3d_convert.errors.I3DConvertError` naming both values). Clip *selection*
(``first`` / ``random``) and its seed may differ: StyleGAN-V's protocol takes random clips of real
videos and the first frames of generated ones; both are reported.

Sample size. Fewer videos than the feature size + 1 make a set's covariance rank-deficient and
bias the FVD upward; fewer than :data:`PUBLISHED_N` (StyleGAN-V's ``fvd2048``, the published
convention) leave a bias that shrinks like 1/N, so the number is comparable only with FVDs at the
same N (docs/fvd.md measures both). Each is one warning line per set; N < 2 is an error.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from i3d_convert._version import __version__
from i3d_convert.errors import I3DConvertError

from .compute import check_same_clips, clip_lengths, distance
from .inputs import ClipOptions
from .protocols import get_protocol
from .runner import StatsJob, compute_stats
from .stats import FVDStats, is_stats_file, load_stats
from .uncertainty import (BootstrapResult, FVDInfinityResult, bootstrap_fvd, check_fvd_infinity_sizes, check_kvd_sizes,
                          fvd_infinity, kernel_distance)

#: Videos per set below which the FVD is not comparable with published numbers (StyleGAN-V's fvd2048).
PUBLISHED_N = 2048


class SampleSizeWarning(UserWarning):
    """A set is small enough to move the FVD (rank-deficient covariance, or below the published N)."""


class SettingsTakenWarning(UserWarning):
    """Videos are computed with settings taken from the stats file they are compared with."""


@dataclass(frozen=True)
class ClipChoice:
    """Clip settings as given by the caller; ``None``: not given (taken from a stats file, else the default)."""

    frames: Optional[int] = None
    clip: Optional[str] = None
    seed: Optional[int] = None
    num_videos: Optional[int] = None


@dataclass(frozen=True)
class FVDRequest:
    """Two sources and how to compare them. ``job``: how videos are computed (its ``source``,
    ``protocol`` and ``clips`` are filled in per source); ``protocol``: ``None`` takes a stats file's;
    ``bootstrap``: resamples (0: none); ``kvd``, ``fvd_inf``: those statistics too; ``seed`` (``clips.seed``)
    also seeds the bootstrap and FVD-infinity."""

    first: Path
    second: Path
    job: StatsJob = field(default_factory=lambda: StatsJob(Path(".")))
    protocol: Optional[str] = None
    clips: ClipChoice = field(default_factory=ClipChoice)
    bootstrap: int = 0
    kvd: bool = False
    fvd_inf: bool = False

    def __post_init__(self) -> None:
        if self.bootstrap == 1 or self.bootstrap < 0:
            raise I3DConvertError(f"{{arg}} must be 0 (none) or at least 2 resamples for a spread, got {self.bootstrap}",
                                  argument="bootstrap")

    @property
    def needs_features(self) -> bool:
        return self.bootstrap > 0 or self.kvd or self.fvd_inf


@dataclass
class FVDReport:
    """The distance and everything it was computed from."""

    fvd: float
    sets: Tuple[FVDStats, FVDStats]
    sources: Tuple[Path, Path]
    seed: int
    bootstrap: Optional[BootstrapResult] = None
    kvd: Optional[Tuple[float, float]] = None
    fvd_inf: Optional[FVDInfinityResult] = None

    def settings(self, index: int) -> Dict[str, Any]:
        """What set ``index`` (0 or 1) was computed with, as its stats record it."""
        meta = self.sets[index].metadata
        keys = ("frames", "clip", "seed", "clip_lengths", "source_resolutions", "input_range", "num_videos")
        return {"source": str(self.sources[index]), "stats_file": is_stats_file(self.sources[index]),
                "n": self.sets[index].n, **{k: meta.get(k) for k in keys}}

    def as_dict(self) -> Dict[str, Any]:
        meta = self.sets[0].metadata
        out: Dict[str, Any] = {"fvd": self.fvd, "n_a": self.sets[0].n, "n_b": self.sets[1].n,
                               "protocol": meta.get("protocol"), "weights": meta.get("weights"),
                               "settings": {"a": self.settings(0), "b": self.settings(1)}}
        if self.bootstrap is not None:
            out["bootstrap"] = self.bootstrap.as_dict()
        if self.kvd is not None:
            std = None if math.isnan(self.kvd[1]) else self.kvd[1]  # one block: no spread estimate (JSON null)
            out["kvd"] = {"value": self.kvd[0], "std": std, "max_block_size": 1024}
        if self.fvd_inf is not None:
            out["fvd_inf"] = self.fvd_inf.as_dict()
        return {**out, "package_version": __version__}

    def lines(self) -> List[str]:
        """The human-readable report, one statistic per line."""
        n_a, n_b = self.sets[0].n, self.sets[1].n
        out = [f"FVD {self.fvd:.6g} ({n_a} vs {n_b} videos, protocol {self.sets[0].metadata.get('protocol')})"]
        if self.bootstrap is not None:
            b = self.bootstrap
            out.append(f"bootstrap ({b.resamples} resamples, seed {b.seed}): mean {b.mean:.6g}, std {b.std:.4g}, "
                       f"95% interval [{b.interval95[0]:.6g}, {b.interval95[1]:.6g}] (sampling variation at this N)")
        if self.fvd_inf is not None:
            f = self.fvd_inf
            sizes = f"{f.points[-1][0]}..{f.points[0][0]}"
            out.append(f"FVD-infinity {f.value:.6g} +- {f.stderr:.3g} (line in 1/N through {len(f.points)} subset "
                       f"sizes {sizes}, slope {f.slope:.4g}, R^2 {f.r2:.3f}, seed {f.seed})")
        if self.kvd is not None:
            spread = "one block: no std" if math.isnan(self.kvd[1]) else f"+- {self.kvd[1]:.3g}, block estimate"
            out.append(f"KVD {self.kvd[0]:.6g} ({spread}; TF-GAN's kernel distance)")
        return out


def _describe_lengths(lengths: List[int]) -> str:
    return f"{', '.join(map(str, lengths))} frames"


def _clips_for_videos(request: FVDRequest, stats: Optional[FVDStats], stats_path: Optional[Path],
                      videos: Path) -> ClipOptions:
    """The clip options for ``videos``: as given, else the stats file's (said in one warning), else defaults."""
    given, defaults = request.clips, ClipOptions()
    chosen = {"frames": given.frames, "clip": given.clip, "seed": given.seed}
    taken = []
    recorded = stats.metadata if stats is not None else {}
    lengths = clip_lengths(recorded)
    if given.frames is not None and lengths is not None and lengths != [given.frames]:
        raise I3DConvertError(f"its clips are {_describe_lengths(lengths)}, not {{arg}}={given.frames}; FVD compares "
                              "clips of one length (leave out --frames to use the stats file's)", stats_path,
                              argument="frames")
    for name, value in list(chosen.items()):
        if value is None and name in recorded and recorded[name] is not None:
            chosen[name] = recorded[name]
            if recorded[name] != getattr(defaults, name):
                taken.append(f"--{name} {recorded[name]}")
        elif value is None:
            chosen[name] = getattr(defaults, name)
    if taken:
        warnings.warn(f"{videos}: computed with {stats_path}'s {', '.join(taken)} (pass them to override)",
                      SettingsTakenWarning, stacklevel=3)
    return ClipOptions(chosen["frames"], chosen["clip"], chosen["seed"], given.num_videos)


def _protocol(request: FVDRequest, loaded: Dict[int, FVDStats], paths: Tuple[Path, Path]) -> str:
    if request.protocol is None:
        return next((s.metadata.get("protocol") for s in loaded.values()), None) or "reference"
    for index, stats in loaded.items():
        if stats.metadata.get("protocol") != request.protocol:
            raise I3DConvertError(f"stats were computed with protocol {stats.metadata.get('protocol')!r}, "
                                  f"not {{arg}}={request.protocol}", paths[index], argument="protocol")
    return request.protocol


def _check_pair(sets: Tuple[FVDStats, FVDStats], paths: Tuple[Path, Path], request: FVDRequest) -> None:
    for stats, path in zip(sets, paths):
        if stats.n < 2:
            raise I3DConvertError(f"holds {stats.n} video; FVD needs at least 2 per set", path)
    sets[0].check_compatible(sets[1], "the two sets")
    check_same_clips(sets[0], sets[1], (str(paths[0]), str(paths[1])))
    if request.fvd_inf:
        check_fvd_infinity_sizes(sets[0].n, sets[1].n)
    if request.kvd:
        check_kvd_sizes(sets[0].n, sets[1].n)
    if request.needs_features:
        for stats, path in zip(sets, paths):
            if stats.features is None:
                raise I3DConvertError("this stats file has no per-video features, which --bootstrap, --kvd and "
                                      "--fvd-inf need (fvd-stats --keep-features writes them)", path)


def sample_size_warnings(sets: Tuple[FVDStats, FVDStats], paths: Tuple[Path, Path]) -> List[str]:
    """One message per set whose size moves the FVD (see the module docstring); empty when none does."""
    messages = []
    for stats, path in zip(sets, paths):
        n, dim = stats.n, stats.dim
        if dim is not None and n < dim + 1:
            messages.append(f"{path}: {n} videos, fewer than the feature size + 1 ({dim + 1}): the covariance is "
                            f"rank-deficient and the FVD biased upward by a term that shrinks like 1/N; use "
                            f">= {PUBLISHED_N} videos, or --fvd-inf for the N -> infinity estimate")
        elif n < PUBLISHED_N:
            messages.append(f"{path}: {n} videos, fewer than the {PUBLISHED_N} of published FVDs: the FVD is biased "
                            "upward by a term that shrinks like 1/N, so compare it only with FVDs at the same N")
    return messages


def compare(request: FVDRequest) -> FVDReport:
    """The FVD (and the requested statistics) between ``request.first`` and ``request.second``."""
    paths = (Path(request.first), Path(request.second))
    loaded = {i: load_stats(p) for i, p in enumerate(paths) if is_stats_file(p)}
    protocol = _protocol(request, loaded, paths)
    get_protocol(protocol)
    reference = next(iter(loaded.items()), None)
    sets = []
    for index, path in enumerate(paths):
        if index in loaded:
            sets.append(loaded[index])
            continue
        stats, stats_path = (reference[1], paths[reference[0]]) if reference else (None, None)
        clips = _clips_for_videos(request, stats, stats_path, path)
        sets.append(compute_stats(replace(request.job, source=path, protocol=protocol, clips=clips,
                                          keep_features=request.needs_features)))
    pair = (sets[0], sets[1])
    _check_pair(pair, paths, request)
    for message in sample_size_warnings(pair, paths):
        warnings.warn(message, SampleSizeWarning, stacklevel=2)
    seed = request.clips.seed if request.clips.seed is not None else next(
        (s.metadata["seed"] for s in pair if isinstance(s.metadata.get("seed"), int)), 0)
    report = FVDReport(distance(*pair), pair, paths, seed)
    a, b = pair[0].features, pair[1].features
    if request.bootstrap:
        report.bootstrap = bootstrap_fvd(a, b, request.bootstrap, seed, protocol)
    if request.fvd_inf:
        report.fvd_inf = fvd_infinity(a, b, seed, protocol)
    if request.kvd:
        report.kvd = kernel_distance(a, b)
    return report


__all__ = ["PUBLISHED_N", "ClipChoice", "FVDReport", "FVDRequest", "SampleSizeWarning", "SettingsTakenWarning",
           "compare", "sample_size_warnings"]
