"""Finished windows of a video still being computed, so that a killed run resumes mid-video.

``OUTDIR/.partial/<relative>/`` holds ``identity.json`` (source size and mtime, settings key,
weights, batch size) and chunk files ``w<first>-<stop>.npz`` (``{stream: [stop - first, ...]}``),
each written atomically after a whole batch. A rerun with the same identity starts the video at the
end of the chunks that follow each other from window 0 (a multiple of the batch size, so the batches
and therefore the bits are those of an uninterrupted run); another identity discards them. The
folder goes when the video's output is written or the video fails.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

from i3d_convert.io.atomic import atomic_output

PARTIAL_DIR = ".partial"
_CHUNK = re.compile(r"^w(\d{9})-(\d{9})\.npz$")


class PartialFeatures:
    """The checkpoint of one video (see the module docstring)."""

    def __init__(self, outdir: Path, relative: str, identity: dict) -> None:
        self.folder = outdir / PARTIAL_DIR / relative
        self.identity = json.loads(json.dumps(identity, sort_keys=True))

    def _chunks(self) -> List[Tuple[int, int, Path]]:
        """The chunks that follow each other from window 0, if the identity matches; else none (cleared)."""
        if not self.folder.is_dir():
            return []
        try:
            recorded = json.loads((self.folder / "identity.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            recorded = None
        if recorded != self.identity:
            self.clear()
            return []
        found = sorted((int(m[1]), int(m[2]), p) for p in self.folder.iterdir() if (m := _CHUNK.match(p.name)))
        chain, stop = [], 0
        for first, end, path in found:
            if first != stop:
                break
            chain.append((first, end, path))
            stop = end
        return chain

    def resume_point(self) -> int:
        """Windows already done (0 when nothing usable is recorded)."""
        chain = self._chunks()
        return chain[-1][1] if chain else 0

    def load(self, stop: int) -> Dict[str, List[np.ndarray]]:
        """``{stream: [chunk arrays]}`` of windows ``0 .. stop`` (as :meth:`resume_point` gave)."""
        rows: Dict[str, List[np.ndarray]] = {}
        for first, end, path in self._chunks():
            if end > stop:
                break
            with np.load(path, allow_pickle=False) as chunk:
                for stream in chunk.files:
                    rows.setdefault(stream, []).append(chunk[stream])
        return rows

    def save(self, first: int, arrays: Dict[str, np.ndarray]) -> None:
        """Record windows ``first .. first + len`` (all streams the same number of rows)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        identity = self.folder / "identity.json"
        if not identity.is_file():
            with atomic_output(identity, overwrite=True) as tmp:
                Path(tmp).write_text(json.dumps(self.identity, sort_keys=True), encoding="utf-8")
        stop = first + len(next(iter(arrays.values())))
        with atomic_output(self.folder / f"w{first:09d}-{stop:09d}.npz", overwrite=True) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
        for parent in self.folder.parents:  # empty folders up to .partial itself
            if parent.name == "" or not parent.is_dir() or any(parent.iterdir()):
                break
            parent.rmdir()
            if parent.name == PARTIAL_DIR:
                break
