"""How far to trust an FVD: bootstrap intervals, FVD extrapolated to infinitely many videos, and KVD.

All three work on per-video features (``[N, D]``, one row per video, in the set's order) and are
deterministic for a ``seed``: every random draw comes from ``numpy.random.default_rng(seed)`` in a
fixed order, and the features are the same on every torchrun rank (gathered in index order), so
the results do not depend on the world size.

* :func:`bootstrap_fvd`: each set's rows resampled with replacement ``resamples`` times; the FVD of
  every resample gives a mean, a standard deviation and a 95 % percentile interval. It measures the
  *sampling variation* of the FVD at this N, not its small-N bias (the resampled FVDs scatter
  around the biased value, not around the distance at N = infinity).
* :func:`fvd_infinity`: Chong and Forsyth, "Effectively Unbiased FID and Inception Score and where
  to find them" (CVPR 2020): the FVD of random subsets (drawn *without* replacement) at several
  sizes, a least-squares line in 1/N, its intercept (N = infinity) and that intercept's standard
  error from the fit.
* :func:`kernel_distance`: KVD (Unterthiner et al. 2018) exactly as TF-GAN's
  ``kernel_classifier_distance_and_std_from_activations`` computes it: cubic polynomial kernel
  ``(x.y / D + 1) ** 3``, the unbiased MMD^2 per block of at most ``max_block_size`` rows, the mean
  over blocks and the block estimate of its standard error (NaN for one block), here in float64.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Tuple

import numpy as np

from i3d_convert.errors import I3DConvertError

from .frechet import frechet_distance_from_moments
from .protocols import Protocol, get_protocol

#: Subset sizes of FVD-infinity: this many, evenly spaced in 1/N from the full sets down to
#: ``FVD_INF_SMALLEST`` of them (Chong and Forsyth fit 15 sizes over a 10x range of N; a finite set
#: gives a shorter range, and below about half the set the 1/N line bends for N < D + 1).
FVD_INF_POINTS = 10
FVD_INF_SMALLEST = 0.5
#: Fewest videos per set for a line (subsets of 5..10 videos: 6 distinct sizes); a useful one needs hundreds.
FVD_INF_MIN_VIDEOS = 10


def _features(rows: np.ndarray, where: str) -> np.ndarray:
    x = np.asarray(rows)
    if x.ndim != 2 or x.shape[0] < 2:
        raise I3DConvertError(f"{where}: per-video features must be [N >= 2, D], got shape {list(x.shape)}")
    return x.astype(np.float64, copy=False)


def _pair(features_a: np.ndarray, features_b: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    a, b = _features(features_a, "the first set"), _features(features_b, "the second set")
    if a.shape[1] != b.shape[1]:
        raise I3DConvertError(f"the two sets have different feature sizes: {a.shape[1]} vs {b.shape[1]}")
    return a, b


def _moments(x: np.ndarray, ddof: int) -> Tuple[np.ndarray, np.ndarray]:
    mean = x.mean(axis=0)
    centred = x - mean
    return mean, (centred.T @ centred) / np.float64(len(x) - ddof)


def fvd_of_features(a: np.ndarray, b: np.ndarray, protocol: "str | Protocol" = "reference") -> float:
    """The FVD of two ``[N, D]`` feature sets under ``protocol``'s covariance divisor and dtype (float64 result)."""
    chosen = get_protocol(protocol)
    mean_a, cov_a = _moments(a, chosen.ddof)
    mean_b, cov_b = _moments(b, chosen.ddof)
    return float(frechet_distance_from_moments(mean_a, cov_a, mean_b, cov_b, np.dtype(chosen.compute_dtype)))


@dataclass(frozen=True)
class BootstrapResult:
    """``resamples`` FVDs of resampled sets: their mean, std (N-1) and 2.5 / 97.5 percentiles."""

    resamples: int
    seed: int
    mean: float
    std: float
    interval95: Tuple[float, float]

    def as_dict(self) -> Dict[str, object]:
        return {**asdict(self), "interval95": list(self.interval95)}


def bootstrap_fvd(features_a: np.ndarray, features_b: np.ndarray, resamples: int, seed: int = 0,
                  protocol: "str | Protocol" = "reference") -> BootstrapResult:
    """Resample each set's rows with replacement ``resamples`` times (``>= 2``) and summarise the FVDs."""
    if resamples < 2:
        raise I3DConvertError(f"resamples must be >= 2 for a spread, got {resamples}")
    a, b = _pair(features_a, features_b)
    rng = np.random.default_rng(seed)
    values = np.empty(resamples)
    for i in range(resamples):
        values[i] = fvd_of_features(a[rng.integers(0, len(a), len(a))], b[rng.integers(0, len(b), len(b))], protocol)
    low, high = np.percentile(values, [2.5, 97.5])
    return BootstrapResult(resamples, seed, float(values.mean()), float(values.std(ddof=1)), (float(low), float(high)))


@dataclass(frozen=True)
class FVDInfinityResult:
    """The intercept of ``FVD = value + slope / N`` fitted to subset FVDs, with its standard error.

    ``points``: ``[(n_a, n_b, fvd)]``, largest subsets first; N in the fit is ``n_a`` (the sets are
    subsampled by the same fraction, so the line in 1/n_a is the line in 1/n_b scaled)."""

    value: float
    stderr: float
    slope: float
    r2: float
    seed: int
    points: List[Tuple[int, int, float]] = field(default_factory=list)

    def as_dict(self) -> Dict[str, object]:
        return {**asdict(self), "points": [{"n_a": na, "n_b": nb, "fvd": v} for na, nb, v in self.points]}


def subset_fractions(points: int = FVD_INF_POINTS, smallest: float = FVD_INF_SMALLEST) -> np.ndarray:
    """``points`` fractions of the sets, evenly spaced in 1/fraction from 1 down to ``smallest``."""
    return 1.0 / np.linspace(1.0, 1.0 / smallest, points)


def fvd_infinity(features_a: np.ndarray, features_b: np.ndarray, seed: int = 0,
                 protocol: "str | Protocol" = "reference", points: int = FVD_INF_POINTS,
                 smallest: float = FVD_INF_SMALLEST) -> FVDInfinityResult:
    """Chong and Forsyth's extrapolation: FVD of subsets (without replacement) at ``points`` sizes from the
    whole sets down to ``smallest`` of them, a least-squares line in 1/N, its intercept at 1/N = 0."""
    a, b = _pair(features_a, features_b)
    check_fvd_infinity_sizes(len(a), len(b))
    rng = np.random.default_rng(seed)
    rows = []
    for fraction in subset_fractions(points, smallest):
        n_a, n_b = max(2, round(fraction * len(a))), max(2, round(fraction * len(b)))
        subset_a, subset_b = rng.permutation(len(a))[:n_a], rng.permutation(len(b))[:n_b]
        rows.append((n_a, n_b, fvd_of_features(a[np.sort(subset_a)], b[np.sort(subset_b)], protocol)))
    x = np.array([1.0 / r[0] for r in rows])
    y = np.array([r[2] for r in rows])
    design = np.stack([np.ones_like(x), x], axis=1)
    (intercept, slope), *_ = np.linalg.lstsq(design, y, rcond=None)
    residuals = y - design @ np.array([intercept, slope])
    dof = len(y) - 2
    sigma2 = float(residuals @ residuals) / dof
    stderr = math.sqrt(sigma2 * np.linalg.inv(design.T @ design)[0, 0])
    total = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float(residuals @ residuals) / total if total > 0 else 1.0
    return FVDInfinityResult(float(intercept), stderr, float(slope), r2, seed, rows)


def check_fvd_infinity_sizes(n_a: int, n_b: int) -> None:
    """Raise unless both sets are large enough for :func:`fvd_infinity`."""
    if min(n_a, n_b) < FVD_INF_MIN_VIDEOS:
        raise I3DConvertError(f"FVD-infinity fits a line through subset sizes and needs at least "
                              f"{FVD_INF_MIN_VIDEOS} videos per set, got {n_a} and {n_b}")


def check_kvd_sizes(n_a: int, n_b: int, max_block_size: int = 1024) -> int:
    """The number of KVD blocks; raises unless every block gets at least 2 rows of each set."""
    if max_block_size < 1:
        raise I3DConvertError(f"max_block_size must be >= 1, got {max_block_size}")
    blocks = math.ceil(max(n_a, n_b) / max_block_size)
    if min(n_a, n_b) < 2 * blocks:
        raise I3DConvertError(f"KVD splits the sets into {blocks} blocks of at most {max_block_size} and needs "
                              f"at least 2 videos of each set per block, got {n_a} and {n_b}")
    return blocks


def kernel_distance(features_a: np.ndarray, features_b: np.ndarray, max_block_size: int = 1024) -> Tuple[float, float]:
    """KVD and its standard error, TF-GAN's block estimator (``features_a``: TF-GAN's ``activations1``,
    the real set), in float64. Every block needs at least 2 rows of each set."""
    a, b = _pair(features_a, features_b)
    blocks = check_kvd_sizes(len(a), len(b), max_block_size)
    dim = np.float64(a.shape[1])
    estimates = np.array([_mmd_block(ra, rb, dim) for ra, rb in zip(_blocks(a, blocks), _blocks(b, blocks))])
    mean = estimates.mean()
    if blocks <= 1:
        return float(mean), float("nan")
    variance = np.sum((estimates - mean) ** 2) / np.float64(blocks - 1)
    return float(mean), float(np.sqrt(variance / np.float64(blocks)))


def _blocks(x: np.ndarray, blocks: int) -> List[np.ndarray]:
    """TF-GAN's split: ``blocks`` consecutive blocks, the last ``len % blocks`` one row longer."""
    size, longer = divmod(len(x), blocks)
    sizes = [size] * (blocks - longer) + [size + 1] * longer
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    return [x[bounds[i]:bounds[i + 1]] for i in range(blocks)]


def _mmd_block(r: np.ndarray, g: np.ndarray, dim: np.float64) -> np.float64:
    m, n = np.float64(len(r)), np.float64(len(g))
    k_rr = (r @ r.T / dim + 1) ** 3
    k_rg = (r @ g.T / dim + 1) ** 3
    k_gg = (g @ g.T / dim + 1) ** 3
    return (-2 * k_rg.mean() + (k_rr.sum() - np.trace(k_rr)) / (m * (m - 1))
            + (k_gg.sum() - np.trace(k_gg)) / (n * (n - 1)))


__all__ = ["BootstrapResult", "FVDInfinityResult", "FVD_INF_MIN_VIDEOS", "FVD_INF_POINTS", "FVD_INF_SMALLEST",
           "bootstrap_fvd", "check_fvd_infinity_sizes", "check_kvd_sizes", "fvd_infinity", "fvd_of_features", "kernel_distance", "subset_fractions"]
