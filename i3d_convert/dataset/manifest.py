"""``OUTDIR/manifest.jsonl``: one JSON object per video, what was computed and from what.

Each rank appends an entry per finished (or failed) video to its own part file under
``OUTDIR/.manifest-parts/`` as soon as that video's output is in place; rank 0 merges the
previous manifest and every part file into ``manifest.jsonl`` (written atomically, one entry
per video, sorted) after the final barrier. A run killed before the merge leaves its part
files, which the next run reads: finished videos are not computed again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, Iterator

from i3d_convert.io.atomic import atomic_output

MANIFEST_NAME = "manifest.jsonl"
PARTS_DIR = ".manifest-parts"


def _read_jsonl(path: Path) -> Iterator[dict]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return
    for line in lines:
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue  # the last line of a part file cut short by a kill
        if isinstance(entry, dict) and isinstance(entry.get("video"), str):
            yield entry


def read_entries(outdir: Path) -> Dict[str, dict]:
    """Every recorded entry, by video name: the merged manifest, then part files left by any run."""
    entries: Dict[str, dict] = {}
    sources = [outdir / MANIFEST_NAME] + sorted((outdir / PARTS_DIR).glob("*.jsonl"))
    for path in sources:
        for entry in _read_jsonl(path):
            entries[entry["video"]] = entry
    return entries


def count_finished(outdir: Path) -> int:
    """How many videos have a finished output in ``outdir`` (recorded done, file in place)."""
    return sum(1 for entry in read_entries(Path(outdir)).values()
               if entry.get("status") == "done" and (Path(outdir) / str(entry.get("output", "\0"))).is_file())


class PartWriter:
    """Appends this rank's entries to its own part file, one line per video, flushed at once."""

    def __init__(self, outdir: Path, rank: int, run_id: str) -> None:
        self.path = outdir / PARTS_DIR / f"{run_id}-rank{rank:05d}.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")

    def append(self, entry: dict) -> None:
        self._file.write(json.dumps(entry, sort_keys=True) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


def merge(outdir: Path) -> Path:
    """Write ``manifest.jsonl`` from everything recorded (the newest entry of each video) and
    remove the merged part files."""
    entries = read_entries(outdir)
    target = outdir / MANIFEST_NAME
    with atomic_output(target, overwrite=True) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            for name in sorted(entries):
                f.write(json.dumps(entries[name], sort_keys=True) + "\n")
    parts = outdir / PARTS_DIR
    for part in parts.glob("*.jsonl"):
        part.unlink()
    if parts.is_dir() and not any(parts.iterdir()):
        parts.rmdir()
    return target
