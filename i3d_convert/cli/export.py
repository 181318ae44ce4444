"""CLI: ``torch-to-tf`` (export back to TensorFlow).

(``evaluate-sample``, GIF input included, is registered by :mod:`i3d_convert.cli.verify`.)
"""

from __future__ import annotations

import re
import time
from pathlib import Path
import typer

from i3d_convert.cli.common import AllowNonFinite, JsonSummary, Overwrite, Quiet, print_json
from i3d_convert.errors import I3DConvertError


def torch_to_tf(
    state_dict: Path = typer.Argument(..., help="PyTorch state_dict file (.safetensors or .pt)."),
    output: Path = typer.Option(..., "-o", "--output",
                                help="Checkpoint prefix to write, e.g. DIR/model.ckpt (DIR is created if missing)."),
    scope: str = typer.Option("rgb", "--scope", help="Variable scope: rgb (RGB/inception_i3d/), flow (Flow/inception_i3d/) or none."),
    layout: str = typer.Option("native", "--layout", help="Layout of the state_dict: native or piergiaj."),
    bn_5d: bool = typer.Option(False, "--bn-5d", help="Write batch-norm vectors as [1,1,1,1,C] (the kin600 layout)."),
    overwrite: Overwrite = False, allow_non_finite: AllowNonFinite = False,
    quiet: Quiet = False, as_json: JsonSummary = False,
) -> None:
    """Export a PyTorch state_dict as a TF1 checkpoint with DeepMind's names (no TensorFlow needed)."""
    from i3d_convert.conversion.torch_to_tf import SCOPES, export_to_tf

    if scope not in SCOPES:
        raise I3DConvertError(f"unknown scope {scope!r}; use one of {', '.join(SCOPES)}")
    if layout not in ("native", "piergiaj"):
        raise I3DConvertError(f"unknown layout {layout!r}; use native or piergiaj")
    if output.suffix == ".index" or re.search(r"\.data-\d+-of-\d+$", output.name):
        raise I3DConvertError("give the checkpoint prefix (DIR/model.ckpt), not one of its files", output)
    start = time.perf_counter()
    result = export_to_tf(state_dict, output, scope=SCOPES[scope], bn_shape_5d=bn_5d, overwrite=overwrite,
                          layout=layout, allow_non_finite=allow_non_finite)
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
        print_json(summary)
    elif not quiet:
        from i3d_convert.cli.output import make_console

        make_console().print(
            f"wrote {result.prefix}: {result.num_tensors} tensors, scope {result.scope!r}, "
            f"{result.in_channels} input channels, {result.num_classes} classes, {seconds:.2f} s"
        )


def register(app: typer.Typer) -> None:
    """Add ``torch-to-tf`` to ``app``."""
    app.command("torch-to-tf")(torch_to_tf)
