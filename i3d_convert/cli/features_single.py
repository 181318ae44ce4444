"""``i3d-convert features CLIP -o OUT.npy``: one clip (.npy array or one video file) to one .npy."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from i3d_convert.errors import I3DConvertError


@dataclass
class SingleRun:
    """The single-clip form's inputs (see ``i3d-convert features --help``)."""

    source: Path
    output: Path
    settings: object
    release: str
    weights: Optional[str]
    flow_weights: Optional[str]
    device: str
    overwrite: bool
    allow_non_finite: bool = False
    compile_pools: bool = False


def _clip_features(run: SingleRun, dev):
    """``(features, windows, clip description)`` of a .npy clip array (RGB or flow by its channels)."""
    from i3d_convert.dataset.models import final_endpoint_for, release_weights
    from i3d_convert.dataset.features import extract_features
    from i3d_convert.weights.factory import i3d
    from i3d_convert.io.clips import load_clips

    if run.settings.crops != "center":
        raise I3DConvertError("--crops applies to videos: a .npy clip array is network input already", run.source)
    clips = load_clips(run.source)
    endpoint = run.settings.endpoint
    model = i3d(run.release, weights=run.weights or release_weights(run.release), progress=False,
                final_endpoint=final_endpoint_for(endpoint), allow_non_finite=run.allow_non_finite).to(dev)
    if run.compile_pools:
        model.compile_max_pools()
    result = extract_features(model, clips, endpoint=endpoint, window=run.settings.window, stride=run.settings.stride,
                              batch_size=run.settings.batch_size, device=dev, path=run.source)
    return result.features, [list(w) for w in result.windows], f"{clips.shape[0]} clip(s) of {clips.shape[1]} frames"


def _video_features(run: SingleRun, dev):
    """``(features, windows, description)`` of one video file through DeepMind's recipe (one stream), streamed."""
    from i3d_convert.dataset.models import load_stream_model
    from i3d_convert.dataset.runner import video_features

    if len(run.settings.streams) != 1:
        raise I3DConvertError("two streams need a folder output (-o DIR): a .npy holds one stream", run.output)
    (stream,) = run.settings.streams
    spec = run.weights if stream == "rgb" else run.flow_weights
    model = load_stream_model(stream, spec or (run.release if stream == "rgb" else None), run.settings.endpoint, dev,
                              allow_non_finite=run.allow_non_finite, compile_pools=run.compile_pools)
    result = video_features({stream: model}, run.source, run.settings, dev)
    features = result.features[stream]
    windows = [list(w) for w in result.windows]
    return features, windows, f"{features.shape[0]} windows ({stream}, {run.settings.crops} crops)"


def run_single(run: SingleRun, quiet: bool, as_json: bool) -> None:
    from i3d_convert.device import resolve_device
    from i3d_convert.dataset.features import save_features
    from i3d_convert.io.atomic import check_output_path

    check_output_path(run.output, run.overwrite,
                      inputs=[p for p in (run.source, run.weights, run.flow_weights) if p is not None])
    dev = resolve_device("cpu" if run.device == "auto" else run.device)
    start = time.perf_counter()
    compute = _clip_features if run.source.suffix.lower() == ".npy" else _video_features
    features, windows, described = compute(run, dev)
    rows = len(windows)
    save_features(features, run.output, run.overwrite)
    seconds = time.perf_counter() - start
    summary = {"output": str(run.output), "input": str(run.source), "endpoint": run.settings.endpoint,
               "shape": list(features.shape), "rows": rows, "windows": windows, "window": run.settings.window,
               "stride": run.settings.stride or run.settings.window, "seconds": round(seconds, 3)}
    if as_json:
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    elif not quiet:
        sys.stdout.write(f"wrote {run.output}: {rows} windows x {tuple(features.shape[1:])} ({run.settings.endpoint}) "
                         f"from {described}, window {summary['window']}, stride {summary['stride']}, {seconds:.2f} s\n")
