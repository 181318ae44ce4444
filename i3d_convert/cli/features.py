"""``i3d-convert features``: sliding-window I3D features of a clip, one row per window."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Optional

import typer

from i3d_convert.errors import I3DConvertError


def register(app: typer.Typer) -> None:
    @app.command("features")
    def features(
        clip: Path = typer.Argument(..., help="Clip: .npy float array NTHWC or THWC in [-1, 1], or a video/GIF."),
        output: Path = typer.Option(..., "-o", "--output", help="Output .npy: one row per window."),
        endpoint: str = typer.Option("pool", "--endpoint",
                                     help="pool (1024-d), Logits (classes) or Mixed_5c (or any other endpoint)."),
        window: int = typer.Option(64, "--window", help="Frames per window."),
        stride: Optional[int] = typer.Option(None, "--stride", help="Frames between window starts (default: --window)."),
        batch_size: int = typer.Option(4, "--batch-size", help="Windows per forward pass."),
        weights: Optional[Path] = typer.Option(None, "--weights",
                                               help="Converted .safetensors/.pt or a TF checkpoint (converted on the fly)."),
        release: str = typer.Option("rgb_imagenet", "--release",
                                    help="Release to download and convert when --weights is not given."),
        device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
        frames: Optional[int] = typer.Option(None, "--frames", help="Videos only: read the first N frames."),
        size: int = typer.Option(224, "--size", help="Videos only: shorter side resized to this, then centre-cropped square."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output file."),
        allow_non_finite: bool = typer.Option(False, "--allow-non-finite",
                                              help="Run weights with NaN or inf values (with a warning) instead of failing."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar, print nothing on success."),
        as_json: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout."),
    ) -> None:
        """Extract I3D features over sliding windows (the pooled 1024-d feature and the logits FVD uses)."""
        from i3d_convert import architecture as arch
        from i3d_convert.cli.app import non_finite_tensors, refuse_or_warn_non_finite
        from i3d_convert.cli.output import is_terminal, make_console
        from i3d_convert.io.atomic import check_output_path
        from i3d_convert.device import resolve_device
        from i3d_convert.integrations.features import FEATURE_ENDPOINTS, POOL, extract_features, save_features
        from i3d_convert.io.clips import load_clips
        from i3d_convert.integrations.hub import i3d

        if endpoint not in FEATURE_ENDPOINTS:
            raise I3DConvertError(f"unknown endpoint {endpoint!r}; choose one of {', '.join(FEATURE_ENDPOINTS)}")
        check_output_path(output, overwrite, inputs=[p for p in (clip, weights) if p is not None])
        dev = resolve_device(device)
        start = time.perf_counter()
        clips = load_clips(clip, frames=frames, size=size)
        final = arch.LOGITS_NAME if endpoint == arch.LOGITS_NAME else ("Mixed_5c" if endpoint == POOL else endpoint)
        model = i3d(release, pretrained=True, weights=weights, progress=not quiet, final_endpoint=final).to(dev)
        refuse_or_warn_non_finite(non_finite_tensors(model.state_dict()), weights or release, allow_non_finite)

        def run(progress=None):
            return extract_features(model, clips, endpoint=endpoint, window=window, stride=stride,
                                    batch_size=batch_size, device=dev, progress=progress, path=clip)

        if quiet or not is_terminal(stderr=True):
            result = run()
        else:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

            with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                          TimeElapsedColumn(), TimeRemainingColumn(), console=make_console(stderr=True),
                          transient=True) as bar:
                task = bar.add_task(f"{endpoint} windows", total=None)
                result = run(lambda done, total: bar.update(task, completed=done, total=total))
        save_features(result.features, output, overwrite)
        seconds = time.perf_counter() - start
        summary = {
            "output": str(output),
            "input": str(clip),
            "endpoint": endpoint,
            "shape": list(result.features.shape),
            "clips": int(clips.shape[0]),
            "frames": int(clips.shape[1]),
            "window": window,
            "stride": window if stride is None else stride,
            "rows": len(result.windows),
            "windows": [list(w) for w in result.windows],
            "weights": str(weights) if weights is not None else release,
            "device": str(dev),
            "seconds": round(seconds, 3),
        }
        if as_json:
            sys.stdout.write(json.dumps(summary, indent=2) + "\n")
        elif not quiet:
            make_console().print(
                f"wrote {output}: {summary['rows']} windows x {tuple(result.features.shape[1:])} ({endpoint}) "
                f"from {summary['clips']} clip(s) of {summary['frames']} frames, window {window}, "
                f"stride {summary['stride']}, {seconds:.2f} s")
