"""Features over a whole dataset: decode, DeepMind's RGB/flow recipe, I3D, one output per video.

:func:`run_feature_job` is what ``i3d-convert features SRC -o OUTDIR`` runs. Under torchrun each
rank takes every ``WORLD_SIZE``-th video of the sorted list and writes its own outputs; rank 0
merges the manifest after a barrier. Decoding and TV-L1 run in DataLoader worker processes while
the model runs in the main one. Every output is written atomically; a rerun skips videos whose
manifest entry matches the source file, the settings and the weights.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from i3d_convert import architecture as arch
from i3d_convert._version import __version__
from i3d_convert.errors import I3DConvertError, PathLike, problem_with
from i3d_convert import distributed as dist
from i3d_convert.dataset import manifest
from i3d_convert.dataset.models import StreamModel, load_stream_model
from i3d_convert.dataset.outputs import check_output_folder, output_name, write_output
from i3d_convert.dataset.recipe import FeatureSettings, PreparedVideo, prepare_video, source_stat
from i3d_convert.dataset.sources import VideoSource, list_sources
from i3d_convert.dataset.features import extract_features

#: ``progress(done_videos, total_videos, windows, video_name)`` on rank 0 after each video.
ProgressFn = Callable[[int, int, int, str], None]


@dataclass
class FeatureJob:
    """One features run. ``rgb_weights``/``flow_weights``: a weights file, TF checkpoint or release
    name (None: DeepMind's ImageNet-pretrained release of that stream). ``workers``: DataLoader
    processes (None: :func:`default_workers`). ``compile_pools``: compiled max pools where they are
    the same bits and faster (:meth:`~i3d_convert.models.i3d.InceptionI3d.compile_max_pools`). More than 0 spawns
    DataLoader processes, so a script that calls this needs the ``if __name__ == "__main__":`` guard."""

    source: PathLike
    outdir: PathLike
    settings: FeatureSettings = field(default_factory=FeatureSettings)
    rgb_weights: Optional[str] = None
    flow_weights: Optional[str] = None
    device: str = "auto"
    workers: Optional[int] = None
    output_format: str = "auto"
    fail_fast: bool = False
    allow_non_finite: bool = False
    compile_pools: bool = False
    progress: Optional[ProgressFn] = None


@dataclass
class RunSummary:
    """What a run did, over all ranks (counts) and on this rank (``failures``)."""

    videos: int
    computed: int
    skipped: int
    failed: int
    failures: List[Tuple[str, str]]
    manifest: Path
    seconds: float


class _PreparedVideos(torch.utils.data.Dataset):
    """This rank's pending videos, decoded and preprocessed in DataLoader workers."""

    def __init__(self, pending: List[Tuple[int, VideoSource]], settings: FeatureSettings) -> None:
        self.pending, self.settings = pending, settings

    def __len__(self) -> int:
        return len(self.pending)

    def __getitem__(self, i: int) -> PreparedVideo:
        index, source = self.pending[i]
        return prepare_video(index, source, self.settings)


def _single(batch):
    return batch


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # workers decode and compute flow; the model's threads stay in the main process
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:  # pragma: no cover - flow needs cv2, RGB does not
        pass


def _is_current(entry: Optional[dict], source: VideoSource, identity: dict, outdir: Path) -> bool:
    if not entry or entry.get("status") != "done":
        return False
    try:
        size, mtime_ns = source_stat(source.path)
    except OSError:
        return False
    return (entry.get("size") == size and entry.get("mtime_ns") == mtime_ns
            and entry.get("settings_key") == identity["settings_key"] and entry.get("weights") == identity["weights"]
            and (outdir / entry.get("output", "\0")).is_file())


def video_features(models: Dict[str, StreamModel], video: PreparedVideo, settings: FeatureSettings,
                   device: torch.device) -> Dict[str, np.ndarray]:
    """``{stream: [windows, ...] float32}`` (plus ``joint`` = rgb + flow for two-stream Logits)."""
    out: Dict[str, np.ndarray] = {}
    for stream, model in models.items():
        clip = video.rgb if stream == "rgb" else video.flow
        out[stream] = extract_features(model.model, clip[None], endpoint=settings.endpoint, window=settings.window,
                                       stride=settings.stride, batch_size=settings.batch_size, device=device,
                                       path=video.source.path).features
    if len(out) == 2 and settings.endpoint == arch.LOGITS_NAME:
        out["joint"] = out["rgb"] + out["flow"]  # DeepMind's two-stream logits: the sum
    return out


def _entry(video: PreparedVideo, identity: dict, settings: FeatureSettings) -> dict:
    return {"video": video.source.relative, "source": str(video.source.path), "size": video.size,
            "mtime_ns": video.mtime_ns, "frames": video.frames, "fps": settings.decode.fps,
            "streams": list(settings.streams), "endpoint": settings.endpoint, "settings": settings.describe(),
            "version": __version__, **identity}


def _process(job: FeatureJob, video: PreparedVideo, models, identity, device, outdir: Path) -> dict:
    entry = _entry(video, identity, job.settings)
    if video.error is not None:
        return {**entry, "status": "failed", "error": video.error}
    try:
        arrays = video_features(models, video, job.settings, device)
    except I3DConvertError as exc:
        return {**entry, "status": "failed", "error": problem_with(exc, video.source.path)}
    name = output_name(video.source.relative, job.settings.streams, job.output_format)
    write_output(outdir / name, arrays, {"video": video.source.relative, "endpoint": job.settings.endpoint})
    rows = next(iter(arrays.values())).shape[0]
    return {**entry, "status": "done", "output": name, "windows": int(rows),
            "shape": {k: list(v.shape) for k, v in arrays.items()}}


def run_feature_job(job: FeatureJob) -> RunSummary:
    """Run ``job`` on this process's share of the videos; see the module docstring."""
    start = time.perf_counter()
    context = dist.context_from_environment()
    device = dist.select_device(context, job.device)
    outdir = Path(job.outdir)
    check_output_folder(outdir)
    sources = list_sources(job.source)
    if context.is_main:
        outdir.mkdir(parents=True, exist_ok=True)
    dist.start(context, device)
    dist.barrier(context)
    models = {s: load_stream_model(s, job.rgb_weights if s == "rgb" else job.flow_weights, job.settings.endpoint,
                                   device, job.allow_non_finite, job.compile_pools) for s in job.settings.streams}
    identity = {"settings_key": job.settings.key(), "weights": {s: m.sha256 for s, m in models.items()}}
    recorded = manifest.read_entries(outdir)
    mine = dist.shard(list(enumerate(sources)), context)
    pending = [(i, s) for i, s in mine if not _is_current(recorded.get(s.relative), s, identity, outdir)]
    failures, computed = _run_pending(job, pending, models, identity, device, outdir, context, len(mine) - len(pending))
    totals = [dist.all_sum(context, n) for n in (computed, len(failures))]
    dist.barrier(context)
    if context.is_main:
        manifest.merge(outdir)
    dist.barrier(context)
    dist.finish(context)
    return RunSummary(len(sources), totals[0], len(sources) - totals[0] - totals[1], totals[1], failures,
                      outdir / manifest.MANIFEST_NAME, time.perf_counter() - start)


def default_workers(device: torch.device, streams) -> int:
    """Decoding processes when none are asked for (measured on 2 cores, docs/benchmarks.md): RGB on
    the CPU none (the model already uses every core); TV-L1 is single-threaded, so flow gets one per
    core (at most 4); beside a GPU, half the cores (at most 4)."""
    cores = os.cpu_count() or 2
    if device.type != "cpu":
        return min(4, max(1, cores // 2))
    return min(4, cores) if "flow" in streams else 0


def _run_pending(job: FeatureJob, pending, models, identity, device, outdir: Path, context, skipped: int):
    workers = default_workers(device, job.settings.streams) if job.workers is None else job.workers
    writer = manifest.PartWriter(outdir, context.rank, f"{int(time.time())}-{context.world_size}")
    # Workers are spawned, not forked: a fork of a process whose OpenMP/oneDNN threads have run (the
    # model, before this run) can inherit a held lock and hang in the child.
    loader = torch.utils.data.DataLoader(_PreparedVideos(pending, job.settings), batch_size=None,
                                         num_workers=workers, collate_fn=_single,
                                         worker_init_fn=_worker_init if workers else None,
                                         multiprocessing_context="spawn" if workers else None)
    failures: List[Tuple[str, str]] = []
    computed = 0
    try:
        for done, video in enumerate(loader, start=1):
            entry = _process(job, video, models, identity, device, outdir)
            writer.append(entry)
            if entry["status"] == "failed":
                failures.append((entry["video"], entry["error"]))
                if job.fail_fast:
                    raise I3DConvertError(entry["error"], video.source.path)
            else:
                computed += 1
            if job.progress is not None and context.is_main:
                job.progress(done + skipped, len(pending) + skipped, int(entry.get("windows", 0)), entry["video"])
    finally:
        writer.close()
    return failures, computed
