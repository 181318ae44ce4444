"""Features over a whole dataset: decode, DeepMind's RGB/flow recipe, I3D, one output per video.

:func:`run_feature_job` is what ``i3d-convert features SRC -o OUTDIR`` runs. Under torchrun each
rank takes every ``WORLD_SIZE``-th video of the sorted list and writes its own outputs; rank 0
merges the manifest after a barrier. Videos stream window batch by window batch
(:mod:`~i3d_convert.dataset.streaming`): decoding and TV-L1 run in DataLoader worker processes (a
worker streams its own videos) while the model runs in the main one, so memory does not grow with a
video's length. Every output is written atomically; a rerun skips videos whose manifest entry
matches the source file, the settings and the weights, and resumes a video cut short from its last
checkpoint of finished windows (:mod:`~i3d_convert.dataset.partial`).
"""

from __future__ import annotations

import dataclasses
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
from i3d_convert.dataset.partial import PartialFeatures
from i3d_convert.dataset.recipe import FeatureSettings, source_stat
from i3d_convert.dataset.sources import VideoSource, list_sources
from i3d_convert.dataset.streaming import VideoWindows, WindowBatch, batch_features
from i3d_convert.io.video_decode import DecodeError

#: ``progress(done_videos, total_videos, new_windows, video_name)`` on rank 0 after each batch of
#: windows (``new_windows``: that batch's) and after each video (0), so long videos show progress.
ProgressFn = Callable[[int, int, int, str], None]


@dataclass
class FeatureJob:
    """One features run. ``rgb_weights``/``flow_weights``: a weights file, TF checkpoint or release
    name (None: DeepMind's ImageNet-pretrained release of that stream). ``workers``: DataLoader
    processes (None: :func:`default_workers`). ``compile_pools``: compiled max pools where they are
    the same bits and faster (:meth:`~i3d_convert.models.i3d.InceptionI3d.compile_max_pools`). More than 0 spawns
    DataLoader processes, so a script that calls this needs the ``if __name__ == "__main__":`` guard.
    ``checkpoint_seconds``: a video's finished windows are checkpointed at most this often (0: every
    batch), so a killed run resumes mid-video (:mod:`~i3d_convert.dataset.partial`)."""

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
    checkpoint_seconds: float = 300.0
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


@dataclass
class _Chunk:
    """Consecutive windows of video ``index``."""

    index: int
    batch: WindowBatch


@dataclass
class _VideoEnd:
    """Video ``index`` is decoded to its end (or failed with ``error``)."""

    index: int
    size: int = 0
    mtime_ns: int = 0
    frames: int = 0
    error: Optional[str] = None


class _StreamedVideos(torch.utils.data.IterableDataset):
    """This rank's pending videos ``(index, source, first_window)`` as :class:`_Chunk` s then a
    :class:`_VideoEnd` each; a DataLoader worker streams every ``num_workers``-th video."""

    def __init__(self, pending: List[Tuple[int, VideoSource, int]], settings: FeatureSettings) -> None:
        self.pending, self.settings = pending, settings

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        mine = self.pending if info is None else self.pending[info.id::info.num_workers]
        for index, source, first_window in mine:
            end = _VideoEnd(index)
            windows = VideoWindows(source.path, self.settings, first_window)
            try:
                end.size, end.mtime_ns = source_stat(source.path)
                for batch in windows:
                    yield _Chunk(index, batch)
            except (DecodeError, I3DConvertError, OSError) as exc:
                end.error = problem_with(exc, source.path)
            end.frames = windows.frames
            yield end


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


@dataclass
class _InFlight:
    """A video whose windows are arriving: its features so far and its checkpoint."""

    source: VideoSource
    partial: PartialFeatures
    rows: Dict[str, List[np.ndarray]]
    windows: int
    saved: int
    saved_parts: int
    saved_at: float
    error: Optional[str] = None


@dataclass
class VideoFeatures:
    """One video's features and the windows they were computed on: ``features`` ``{stream: [windows, ...]
    float32}`` (``[windows, crops, ...]`` for five or ten crops, plus ``joint`` = rgb + flow for two-stream
    Logits); ``windows`` one ``(0, start, stop)`` frame range per row (clip 0, as for a clip array)."""

    features: Dict[str, np.ndarray]
    windows: List[Tuple[int, int, int]]


def video_features(models: Dict[str, StreamModel], source: PathLike, settings: FeatureSettings,
                   device: torch.device) -> VideoFeatures:
    """The :class:`VideoFeatures` of one video, streamed. Raises on a bad video."""
    settings = settings.for_device(device)
    nets = {s: m.model for s, m in models.items()}
    rows: Dict[str, List[np.ndarray]] = {}
    windows: List[Tuple[int, int, int]] = []
    for batch in VideoWindows(source, settings):
        for stream, features in batch_features(nets, batch, settings, device, source).items():
            rows.setdefault(stream, []).append(features)
        windows.extend((0, start, start + settings.window) for start in batch.starts)
    return VideoFeatures(_joined(rows, settings), windows)


def _joined(rows: Dict[str, List[np.ndarray]], settings: FeatureSettings) -> Dict[str, np.ndarray]:
    out = {stream: np.concatenate(rows[stream]) for stream in settings.streams}  # one order: the same file bytes
    if len(out) == 2 and settings.endpoint == arch.LOGITS_NAME:
        out["joint"] = out["rgb"] + out["flow"]  # DeepMind's two-stream logits: the sum
    return out


def _entry(source: VideoSource, end: _VideoEnd, identity: dict, settings: FeatureSettings) -> dict:
    return {"video": source.relative, "source": str(source.path), "size": end.size,
            "mtime_ns": end.mtime_ns, "frames": end.frames, "fps": settings.decode.fps,
            "streams": list(settings.streams), "endpoint": settings.endpoint, "settings": settings.describe(),
            "version": __version__, **identity}


def _finish(job: FeatureJob, video: _InFlight, end: _VideoEnd, identity, outdir: Path) -> dict:
    entry = _entry(video.source, end, identity, job.settings)
    error = video.error or end.error
    if error is not None:
        video.partial.clear()
        return {**entry, "status": "failed", "error": error}
    arrays = _joined(video.rows, job.settings)
    name = output_name(video.source.relative, job.settings.streams, job.output_format)
    write_output(outdir / name, arrays, {"video": video.source.relative, "endpoint": job.settings.endpoint})
    video.partial.clear()
    rows = next(iter(arrays.values())).shape[0]
    return {**entry, "status": "done", "output": name, "windows": int(rows),
            "shape": {k: list(v.shape) for k, v in arrays.items()}}


def _add_chunk(job: FeatureJob, video: _InFlight, chunk: _Chunk, models, device) -> None:
    """Run the model on a chunk's windows and checkpoint when it is time."""
    if video.error is not None:
        return
    nets = {s: m.model for s, m in models.items()}
    try:
        features = batch_features(nets, chunk.batch, job.settings, device, video.source.path)
    except I3DConvertError as exc:
        video.error = problem_with(exc, video.source.path)
        return
    for stream, array in features.items():
        video.rows.setdefault(stream, []).append(array)
    video.windows = chunk.batch.first + len(chunk.batch.starts)
    if time.monotonic() - video.saved_at >= job.checkpoint_seconds:
        video.partial.save(video.saved, {s: np.concatenate(parts[video.saved_parts:])
                                         for s, parts in video.rows.items()})
        video.saved, video.saved_at = video.windows, time.monotonic()
        video.saved_parts = len(next(iter(video.rows.values())))


def run_feature_job(job: FeatureJob) -> RunSummary:
    """Run ``job`` on this process's share of the videos; see the module docstring."""
    start = time.perf_counter()
    context = dist.context_from_environment()
    device = dist.select_device(context, job.device)
    job = dataclasses.replace(job, settings=job.settings.for_device(device))
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


def _plan(job: FeatureJob, pending, identity: dict, outdir: Path) -> Dict[int, _InFlight]:
    """Each pending video's checkpoint, and the window it resumes from."""
    plan = {}
    for index, source in pending:
        try:
            size, mtime_ns = source_stat(source.path)
        except OSError:
            size, mtime_ns = -1, -1
        partial = PartialFeatures(outdir, source.relative, {**identity, "size": size, "mtime_ns": mtime_ns,
                                                            "batch_size": job.settings.batch_size})
        first = partial.resume_point()
        plan[index] = _InFlight(source, partial, {}, first, first, 0, time.monotonic())
    return plan


def _run_pending(job: FeatureJob, pending, models, identity, device, outdir: Path, context, skipped: int):
    workers = default_workers(device, job.settings.streams) if job.workers is None else job.workers
    writer = manifest.PartWriter(outdir, context.rank, f"{int(time.time())}-{context.world_size}")
    plan = _plan(job, pending, identity, outdir)
    streamed = _StreamedVideos([(i, v.source, v.windows) for i, v in plan.items()], job.settings)
    # Workers are spawned, not forked: a fork of a process whose OpenMP/oneDNN threads have run (the
    # model, before this run) can inherit a held lock and hang in the child.
    loader = torch.utils.data.DataLoader(streamed, batch_size=None, num_workers=workers, collate_fn=_single,
                                         worker_init_fn=_worker_init if workers else None,
                                         multiprocessing_context="spawn" if workers else None)
    failures: List[Tuple[str, str]] = []
    computed = done = 0
    try:
        for item in loader:
            video = plan[item.index]
            if video.windows and not video.rows:  # resumed: the checkpointed windows come first
                video.rows = video.partial.load(video.windows)
                video.saved_parts = len(next(iter(video.rows.values()), []))
            if isinstance(item, _Chunk):
                _add_chunk(job, video, item, models, device)
                if job.progress is not None and context.is_main:
                    job.progress(done + skipped, len(pending) + skipped, len(item.batch.starts), video.source.relative)
                continue
            entry = _finish(job, video, item, identity, outdir)
            del plan[item.index]
            writer.append(entry)
            done += 1
            if entry["status"] == "failed":
                failures.append((entry["video"], entry["error"]))
                if job.fail_fast:
                    raise I3DConvertError(entry["error"], video.source.path)
            else:
                computed += 1
            if job.progress is not None and context.is_main:
                job.progress(done + skipped, len(pending) + skipped, 0, entry["video"])
    finally:
        writer.close()
    return failures, computed
