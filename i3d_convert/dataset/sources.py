"""Which videos a features run covers: a video file, a folder (recursive) or a manifest.

Every source gets a ``relative`` name (its path relative to the folder or manifest it came
from, with ``/`` separators), which names its output and orders the run: the list is sorted
by it, so every process of a distributed run sees the same list in the same order.
"""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import List

from i3d_convert.errors import I3DConvertError, PathLike

#: Container formats decoded with PyAV (FFmpeg).
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg")
#: Decoded with Pillow (animated images).
ANIMATION_SUFFIXES = (".gif",)
#: A folder holding only these (and no videos) is one video, its frames in name order.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
#: Manifest files: one path per line (``.txt``/``.lst``), or CSV with a ``path`` column.
MANIFEST_SUFFIXES = (".txt", ".lst", ".csv")


@dataclass(frozen=True)
class VideoSource:
    """One video of a run: where it is, and the name its outputs and manifest entry use."""

    path: Path
    relative: str


def _is_video_file(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES + ANIMATION_SUFFIXES


def _is_image_folder(folder: Path) -> bool:
    files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
    return bool(files) and all(p.suffix.lower() in IMAGE_SUFFIXES for p in files) and not any(
        p.is_dir() for p in folder.iterdir())


def _scan_folder(root: Path) -> List[VideoSource]:
    found: List[VideoSource] = []
    for path in sorted(root.rglob("*")):
        if any(part.startswith(".") for part in path.relative_to(root).parts):
            continue  # hidden files and our own temporaries
        if path.is_file() and _is_video_file(path):
            found.append(VideoSource(path, path.relative_to(root).as_posix()))
        elif path.is_dir() and _is_image_folder(path):
            found.append(VideoSource(path, path.relative_to(root).as_posix()))
    return found


def _manifest_paths(manifest: Path) -> List[str]:
    text = manifest.read_text(encoding="utf-8")
    if manifest.suffix.lower() != ".csv":
        return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    rows = list(csv.DictReader(text.splitlines()))
    if not rows or "path" not in rows[0]:
        raise I3DConvertError("CSV manifest needs a 'path' column", manifest)
    return [row["path"].strip() for row in rows if (row.get("path") or "").strip()]


def _read_manifest(manifest: Path) -> List[VideoSource]:
    base = manifest.parent
    sources = []
    for entry in _manifest_paths(manifest):
        path = Path(entry)
        path = path if path.is_absolute() else base / path
        relative = Path(entry).as_posix().lstrip("/") if not Path(entry).is_absolute() else path.name
        sources.append(VideoSource(path, relative))
    duplicates = sorted(name for name, count in Counter(s.relative for s in sources).items() if count > 1)
    if duplicates:
        raise I3DConvertError(f"manifest names {duplicates[0]!r} more than once", manifest)
    return sorted(sources, key=lambda s: s.relative)


def list_sources(source: PathLike) -> List[VideoSource]:
    """The videos named by ``source``, sorted by their relative name.

    ``source``: a video file (mp4, avi, mkv, webm, mov, GIF), a folder (searched recursively;
    a folder of images only counts as one video), or a manifest (``.txt``/``.lst`` one path per
    line, ``.csv`` with a ``path`` column; relative paths are relative to the manifest's folder).
    """
    path = Path(source)
    if path.is_dir():
        if _is_image_folder(path):
            return [VideoSource(path, path.name)]
        sources = _scan_folder(path)
        if not sources:
            raise I3DConvertError("folder holds no videos (" + ", ".join(VIDEO_SUFFIXES + ANIMATION_SUFFIXES) + ")", path)
        return sources
    if not path.is_file():
        raise I3DConvertError("file not found", path)
    if path.suffix.lower() in MANIFEST_SUFFIXES:
        return _read_manifest(path)
    return [VideoSource(path, path.name)]
