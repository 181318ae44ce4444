"""``i3d-inflate``: 2D ImageNet weights -> I3D (or any inflated 2D CNN) weights, from the command line.

A thin layer over :func:`i3d_convert.inflation.api.inflate`. Every
:class:`~i3d_convert.errors.I3DConvertError` is caught once, in
:func:`~i3d_convert.cli.common.run_app`, and
printed as one line on stderr with exit code 1 (``--debug`` or
``I3D_CONVERT_DEBUG=1`` shows the traceback instead); nothing is written then.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import List, Optional

import typer

from i3d_convert.cli.common import AllowNonFinite, JsonSummary, Overwrite, Quiet, print_json, run_app
from i3d_convert.cli.output import APP_SETTINGS, make_console

PROG = "i3d-inflate"

app = typer.Typer(
    **APP_SETTINGS,
    help="Inflate 2D ImageNet CNN weights into 3D video-network weights (I3D's bootstrapping).",
)


@app.command()
def inflate_command(
    source: Path = typer.Argument(
        ...,
        help="2D weights: TF-slim inception_v1.ckpt (TF V1 file or V2 prefix), torchvision googlenet "
        ".pth/.safetensors, or a timm model's state_dict file (with --source-format timm:NAME).",
    ),
    output: Path = typer.Option(..., "-o", "--output", help="Output file (.safetensors or .pt)."),
    source_format: Optional[str] = typer.Option(
        None, "--source-format", help="slim, torchvision or timm:NAME (default: a PyTorch/safetensors file is "
        "torchvision, anything else slim)."
    ),
    mode: str = typer.Option("mean", "--mode", help="mean (repeat / kT, the paper's) or center (2D kernel in the central time slice)."),
    in_channels: int = typer.Option(3, "--in-channels", help="3 for RGB, 2 for the flow stream (stem policy: docs/inflate.md)."),
    num_classes: Optional[int] = typer.Option(
        None, "--num-classes", help="Logits: default 1000 (the ImageNet head, slim's background class dropped); "
        "another count gets a new seeded head."
    ),
    reinit_logits: bool = typer.Option(False, "--reinit-logits", help="Re-initialise the logits even when the class count matches."),
    seed: int = typer.Option(0, "--seed", help="Seed of a re-initialised logits layer."),
    time_kernel: Optional[int] = typer.Option(
        None, "--time-kernel", help="timm sources only: temporal size of every conv larger than 1x1 (default 3)."
    ),
    fmt: Optional[str] = typer.Option(None, "--format", help="safetensors (default) or pt; default from the suffix."),
    overwrite: Overwrite = False, allow_non_finite: AllowNonFinite = False,
    quiet: Quiet = False, as_json: JsonSummary = False,
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors."),
) -> None:
    """Inflate a 2D checkpoint into 3D weights; the output loads into InceptionI3d with strict=True."""
    from i3d_convert.conversion.sources import check_finite
    from i3d_convert.conversion.tf_to_torch import output_format, save_state_dict
    from i3d_convert.inflation.api import inflate
    from i3d_convert.io.atomic import check_output_path

    start = time.perf_counter()
    output_format(output, fmt)
    check_output_path(output, overwrite, inputs=[source])
    result = inflate(source, source_format=source_format, mode=mode, in_channels=in_channels,
                     num_classes=num_classes, reinit_logits=reinit_logits, seed=seed, time_kernel=time_kernel)
    check_finite(result.state_dict, source, allow_non_finite=allow_non_finite)  # inflate() does not check
    save_state_dict(result.state_dict, output, result.metadata, fmt=fmt, overwrite=overwrite)
    _report(result, source, output, time.perf_counter() - start, as_json, quiet)


def _report(result, source: Path, output: Path, seconds: float, as_json: bool, quiet: bool) -> None:
    """The JSON summary, or what was written, how the logits and stem were made and what was dropped."""
    mode = result.metadata.get("mode", "")
    if as_json:
        print_json({
            "output": str(output),
            "source": str(source),
            "source_format": result.source_format,
            "tensors": len(result.state_dict),
            "mode": mode,
            "in_channels": result.in_channels,
            "num_classes": result.num_classes,
            "dropped": result.dropped,
            "seconds": round(seconds, 3),
            "metadata": result.metadata,
        })
    elif not quiet:
        console = make_console()
        console.print(
            f"wrote {output}: {len(result.state_dict)} tensors from {result.source_format} {source}, mode {mode}, "
            f"{result.in_channels} input channels, {result.num_classes} classes, {seconds:.2f} s"
        )
        console.print(f"logits: {result.metadata.get('logits', '')}")
        if result.metadata.get("stem", "as in the source") != "as in the source":
            console.print(f"stem: {result.metadata['stem']}")
        if result.dropped:
            counts: dict = {}
            for reason in result.dropped.values():
                counts[reason] = counts.get(reason, 0) + 1
            console.print("dropped: " + "; ".join(f"{n} x {r}" for r, n in counts.items()))


def main(argv: Optional[List[str]] = None) -> None:
    """Console entry point of ``i3d-inflate``."""
    run_app(app, PROG, argv)


if __name__ == "__main__":  # pragma: no cover
    main()
