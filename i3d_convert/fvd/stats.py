"""FVD statistics: streaming float64 moments of FVD features, mergeable, saved with what produced them.

A stats file (``.npz`` or ``.safetensors``, never a pickle) holds ``n``, the shift ``K`` [D],
``sum(x - K)`` [D] and ``sum((x - K)(x - K)^T)`` [D, D] in float64, plus JSON metadata:
format, protocol, weights identity, frames, clip sampling, source resolutions, n, package
version, and a sha256 of the arrays (checked on load, with the shapes, dtypes and n).
Optionally (``keep_features``) it also holds ``features`` [N, D], the per-video features in the
set's order (float32 as the network gives them), which bootstrap intervals, FVD-infinity and KVD
need; they are covered by the same sha256, and a merge concatenates them in order.

Moments are accumulated around ``K`` = the mean of the first batch, so the covariance does not
cancel catastrophically when the feature mean is large next to its spread; merging re-bases
exactly onto the receiver's ``K``.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from i3d_convert._version import __version__
from i3d_convert.errors import I3DConvertError, PathLike
from i3d_convert.io.atomic import atomic_output

from .frechet import frechet_distance_from_moments

#: Written into every stats file; a file of another format is refused.
STATS_FORMAT = "i3d-convert-fvd-stats/1"
_ARRAYS = ("n", "shift", "shifted_sum", "shifted_sum_outer")
#: The optional array of per-video features [N, D].
FEATURES = "features"
#: Metadata that must agree for two stats to be merged or compared.
IDENTITY_KEYS = ("protocol", "weights")


class StatsMismatchError(I3DConvertError):
    """Two stats that cannot be merged or compared (other protocol, other weights, other feature size)."""


class FVDStats:
    """n, shift K [D], sum(x - K) [D] and sum((x - K)(x - K)^T) [D, D], all float64, plus ``metadata``.

    ``metadata`` is a JSON-able dict; ``protocol`` and ``weights`` in it must agree for
    :meth:`merge` and for a distance; ``source_resolutions`` (a sorted list of ``"HxW"``) is united.
    ``keep_features``: also keep every row given to :meth:`update` (:attr:`features`, in order).
    """

    def __init__(self, dim: Optional[int] = None, metadata: Optional[Dict[str, Any]] = None,
                 keep_features: bool = False) -> None:
        self.n = 0
        self.metadata: Dict[str, Any] = dict(metadata or {})
        self.keep_features = keep_features
        self._feature_blocks: List[np.ndarray] = []
        self.shift: Optional[np.ndarray] = None
        self.shifted_sum: Optional[np.ndarray] = None
        self.shifted_sum_outer: Optional[np.ndarray] = None
        if dim is not None:
            self._allocate(int(dim), np.zeros(int(dim)))

    def _allocate(self, dim: int, shift: np.ndarray) -> None:
        self.shift = np.array(shift, dtype=np.float64)
        self.shifted_sum = np.zeros(dim, np.float64)
        self.shifted_sum_outer = np.zeros((dim, dim), np.float64)

    @property
    def dim(self) -> Optional[int]:
        return None if self.shift is None else int(self.shift.shape[0])

    def update(self, features: np.ndarray) -> "FVDStats":
        """Add features ``[N, D]`` (any float dtype; accumulated in float64)."""
        x = np.asarray(features).astype(np.float64, copy=False)
        if x.ndim != 2:
            raise I3DConvertError(f"features must be [N, D], got shape {list(x.shape)}")
        if len(x) == 0:
            return self
        if not np.all(np.isfinite(x)):
            raise I3DConvertError("features contain NaN or inf")
        if self.dim is not None and x.shape[1] != self.dim:
            raise StatsMismatchError(f"feature size {x.shape[1]} != {self.dim}")
        if self.n == 0:
            self._allocate(x.shape[1], np.mean(x, axis=0))
        if self.keep_features:
            rows = np.asarray(features)
            self._feature_blocks.append(rows.astype(np.float32) if rows.dtype == np.float32 else x.copy())
        centred = x - self.shift
        self.shifted_sum += centred.sum(axis=0)
        self.shifted_sum_outer += centred.T @ centred
        self.n += len(x)
        return self

    def check_compatible(self, other: "FVDStats", what: str = "stats") -> None:
        """Raise :class:`StatsMismatchError` when protocol or weights differ (both must be recorded alike)."""
        for key in IDENTITY_KEYS:
            mine, theirs = self.metadata.get(key), other.metadata.get(key)
            if mine != theirs:
                raise StatsMismatchError(f"{what} have different {key}: {_short(mine)} vs {_short(theirs)}")
        if self.dim is not None and other.dim is not None and self.dim != other.dim:
            raise StatsMismatchError(f"{what} have different feature sizes: {self.dim} vs {other.dim}")

    @property
    def features(self) -> Optional[np.ndarray]:
        """The per-video features ``[N, D]`` in order (``None`` unless kept)."""
        if not self.keep_features or self.n == 0:
            return None
        if len(self._feature_blocks) > 1:
            self._feature_blocks = [np.concatenate(self._feature_blocks)]
        return self._feature_blocks[0]

    def drop_features(self) -> "FVDStats":
        """Forget the per-video features (the moments stay)."""
        self.keep_features, self._feature_blocks = False, []
        return self

    def merge(self, other: "FVDStats") -> "FVDStats":
        """Add ``other``'s moments to these (in place); protocol and weights must agree. Per-video features
        stay (these, then ``other``'s) when both sides keep them, else they are dropped."""
        self.check_compatible(other, "merged stats")
        if self.keep_features and (other.keep_features or other.n == 0):
            self._feature_blocks += other._feature_blocks
        elif self.n == 0 and other.keep_features:
            self.keep_features, self._feature_blocks = True, list(other._feature_blocks)
        else:
            self.drop_features()
        resolutions = sorted(set(self.metadata.get("source_resolutions", [])) | set(other.metadata.get("source_resolutions", [])))
        lengths = sorted(set(self.metadata.get("clip_lengths", [])) | set(other.metadata.get("clip_lengths", [])))
        if not self.metadata:
            self.metadata = dict(other.metadata)
        self.metadata["source_resolutions"] = resolutions
        if lengths:
            self.metadata["clip_lengths"] = lengths
        if other.n == 0:
            return self
        if self.n == 0:
            self._allocate(other.dim, other.shift)
        offset = other.shift - self.shift  # x - K_self = (x - K_other) + offset
        s1, s2 = other.shifted_sum, other.shifted_sum_outer
        if np.any(offset != 0):
            count = np.float64(other.n)
            s2 = s2 + np.outer(s1, offset) + np.outer(offset, s1) + count * np.outer(offset, offset)
            s1 = s1 + count * offset
        self.shifted_sum = self.shifted_sum + s1
        self.shifted_sum_outer = self.shifted_sum_outer + s2
        self.n += other.n
        return self

    def copy(self) -> "FVDStats":
        out = FVDStats(metadata=json.loads(json.dumps(self.metadata)), keep_features=self.keep_features)
        out._feature_blocks = [b.copy() for b in self._feature_blocks]
        out.n = self.n
        if self.shift is not None:
            out.shift, out.shifted_sum, out.shifted_sum_outer = (a.copy() for a in (self.shift, self.shifted_sum, self.shifted_sum_outer))
        return out

    @property
    def mean(self) -> np.ndarray:
        """Feature mean [D], float64."""
        if self.n == 0:
            raise I3DConvertError("the stats hold no videos")
        return self.shift + self.shifted_sum / np.float64(self.n)

    def cov(self, ddof: int = 1) -> np.ndarray:
        """Covariance [D, D] with divisor ``n - ddof`` (1: TF-GAN / np.cov; 0: StyleGAN-V's ``FeatureStats``)."""
        if self.n < 2:
            raise I3DConvertError(f"FVD needs at least 2 videos per set, got {self.n}")
        n = np.float64(self.n)
        cov = (self.shifted_sum_outer - np.outer(self.shifted_sum, self.shifted_sum) / n) / (n - np.float64(ddof))
        return 0.5 * (cov + cov.T)

    def arrays(self) -> Dict[str, np.ndarray]:
        if self.shift is None:
            raise I3DConvertError("the stats hold no videos")
        arrays = {"n": np.array(self.n, dtype=np.int64), "shift": self.shift, "shifted_sum": self.shifted_sum,
                  "shifted_sum_outer": self.shifted_sum_outer}
        if self.features is not None:
            arrays[FEATURES] = self.features
        return arrays

    def __repr__(self) -> str:
        return f"FVDStats(n={self.n}, dim={self.dim}, protocol={self.metadata.get('protocol')!r})"


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True) if not isinstance(value, str) else value
    return text if len(text) <= 80 else text[:77] + "..."


def arrays_sha256(arrays: Dict[str, np.ndarray]) -> str:
    """sha256 over the stats arrays (name, dtype, shape, little-endian bytes), in a fixed order
    (``features`` last, when present, so files without it keep their digest)."""
    digest = hashlib.sha256()
    for name in _ARRAYS + ((FEATURES,) if FEATURES in arrays else ()):
        array = np.ascontiguousarray(arrays[name])
        array = array.astype(array.dtype.newbyteorder("<"), copy=False)
        digest.update(f"{name}:{array.dtype.str}:{list(array.shape)}\0".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def frechet_distance(stats_a: FVDStats, stats_b: FVDStats, ddof: int = 1,
                     compute_dtype: "np.dtype | type" = np.float64) -> np.floating:
    """The Fréchet distance between two stats (TF-GAN's formula); protocol and weights must agree."""
    stats_a.check_compatible(stats_b, "the two sets")
    return frechet_distance_from_moments(stats_a.mean, stats_a.cov(ddof), stats_b.mean, stats_b.cov(ddof), compute_dtype)


def save_stats(stats: FVDStats, path: PathLike, overwrite: bool = False) -> Path:
    """Write ``stats`` to ``path`` (``.npz`` or ``.safetensors``) atomically; returns the path."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".npz", ".safetensors"):
        raise I3DConvertError("stats files must end in .npz or .safetensors", path)
    arrays = stats.arrays()
    metadata = {**stats.metadata, "format": STATS_FORMAT, "n": stats.n, "package_version": __version__,
                "sha256": arrays_sha256(arrays)}
    text = json.dumps(metadata, sort_keys=True)
    with atomic_output(path, overwrite=overwrite) as tmp:
        if suffix == ".npz":
            with open(tmp, "wb") as handle:
                np.savez(handle, metadata=np.array(text), **arrays)
        else:
            from safetensors.numpy import save_file

            save_file({k: np.ascontiguousarray(v).reshape(-1) if k == "n" else v for k, v in arrays.items()},
                      str(tmp), metadata={"fvd_stats": text})
    return path


def is_stats_file(path: PathLike) -> bool:
    """Whether ``path`` is meant as a stats file (``.safetensors``, or an ``.npz`` holding ``metadata``)
    rather than videos; whether it is a valid one :func:`load_stats` decides."""
    path = Path(path)
    if path.suffix.lower() == ".safetensors":
        return True
    if path.suffix.lower() != ".npz" or not path.is_file():
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            return "metadata.npy" in archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False


def _read_raw(path: Path) -> "tuple[Dict[str, np.ndarray], str]":
    if path.suffix.lower() == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="np") as handle:
            text = (handle.metadata() or {}).get("fvd_stats")
            arrays = {k: handle.get_tensor(k) for k in handle.keys()}
        if "n" in arrays:
            arrays["n"] = arrays["n"].reshape(()) if arrays["n"].size == 1 else arrays["n"]
        if text is None:
            raise I3DConvertError("no fvd_stats metadata: not an FVD stats file", path)
        return arrays, text
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    text = arrays.pop("metadata", None)
    if text is None or text.dtype.kind != "U" or text.ndim != 0:
        raise I3DConvertError("no metadata: not an FVD stats file", path)
    return arrays, str(text)


def load_stats(path: PathLike) -> FVDStats:
    """Read a stats file written by :func:`save_stats`, checking format, arrays, n and the sha256."""
    path = Path(path)
    if not path.is_file():
        raise I3DConvertError("file not found", path)
    try:
        arrays, text = _read_raw(path)
        metadata = json.loads(text)
    except I3DConvertError:
        raise
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
        raise I3DConvertError(f"cannot read FVD stats ({type(exc).__name__}: {' '.join(str(exc).split())})", path) from None
    if not isinstance(metadata, dict) or metadata.get("format") != STATS_FORMAT:
        raise I3DConvertError(f"not an FVD stats file of format {STATS_FORMAT}", path)
    _check_arrays(arrays, metadata, path)
    stats = FVDStats(metadata={k: v for k, v in metadata.items() if k not in ("format", "sha256", "n")},
                     keep_features=FEATURES in arrays)
    stats._feature_blocks = [arrays[FEATURES]] if FEATURES in arrays else []
    stats.n = int(arrays["n"])
    stats.shift, stats.shifted_sum, stats.shifted_sum_outer = (
        np.array(arrays[k], dtype=np.float64) for k in ("shift", "shifted_sum", "shifted_sum_outer"))
    return stats


def _check_arrays(arrays: Dict[str, np.ndarray], metadata: Dict[str, Any], path: Path) -> None:
    missing = [k for k in _ARRAYS if k not in arrays]
    if missing:
        raise I3DConvertError(f"stats file lacks array {missing[0]!r}", path)
    n, shift = arrays["n"], arrays["shift"]
    dim = shift.shape[0] if shift.ndim == 1 else -1
    if n.shape != () or n.dtype.kind != "i" or int(n) < 1 or int(n) != metadata.get("n"):
        raise I3DConvertError(f"stats file has a bad n ({n!r}, metadata says {metadata.get('n')!r})", path)
    expected = {"shift": (dim,), "shifted_sum": (dim,), "shifted_sum_outer": (dim, dim)}
    for name, shape in expected.items():
        if arrays[name].shape != shape or arrays[name].dtype != np.float64 or dim < 1:
            raise I3DConvertError(f"stats array {name!r} is {arrays[name].dtype} {list(arrays[name].shape)}, "
                                  f"expected float64 {list(shape)}", path)
    unknown = sorted(set(arrays) - set(_ARRAYS) - {FEATURES})
    if unknown:
        raise I3DConvertError(f"stats file holds unknown array {unknown[0]!r}", path)
    if FEATURES in arrays:
        features = arrays[FEATURES]
        if features.shape != (int(n), dim) or features.dtype not in (np.float32, np.float64):
            raise I3DConvertError(f"stats array 'features' is {features.dtype} {list(features.shape)}, expected "
                                  f"float32 or float64 [{int(n)}, {dim}] (n videos by the feature size)", path)
    if arrays_sha256(arrays) != metadata.get("sha256"):
        raise I3DConvertError("stats arrays do not match their recorded sha256 (file altered or corrupt)", path)


__all__ = ["FEATURES", "STATS_FORMAT", "FVDStats", "StatsMismatchError", "frechet_distance", "save_stats", "load_stats",
           "is_stats_file", "arrays_sha256"]
