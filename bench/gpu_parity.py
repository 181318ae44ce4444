"""PyTorch-on-CUDA vs TensorFlow parity with TF32 off and on; records the figures in docs/benchmarks.md.

Usage::

    python bench/gpu_parity.py [--checkpoint CKPT] [--frames 16] [--no-write]

Runs :func:`i3d_convert.verification.verify.verify` on the GPU three times -- float32 with
TF32 off (the parity setting), float32 with TF32 on (what TF32 costs), and
float64 -- on the built-in synthetic checkpoint (or ``--checkpoint``), and
writes a table with the GPU's name between the ``gpu-parity`` markers of
``docs/benchmarks.md`` (the rest of that file is left alone), plus the raw
reports as JSON under ``bench/results/``. TensorFlow runs on the GPU when it
sees one, else on the CPU (the table says which). Without CUDA it prints why
and exits 0: CI never needs a GPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402  (torch before TensorFlow, see i3d_convert.reference.tf_runtime)

DOC = REPO / "docs" / "benchmarks.md"
RESULTS = REPO / "bench" / "results"
START, END = "<!-- gpu-parity:start -->", "<!-- gpu-parity:end -->"
RUNS = (
    ("float32, TF32 off", dict(dtype="float32", allow_tf32=False)),
    ("float32, TF32 on", dict(dtype="float32", allow_tf32=True)),
    ("float64", dict(dtype="float64", allow_tf32=False)),
)


def _markdown(reports, gpu: str, frames: int, checkpoint: str) -> str:
    lines = [
        START,
        f"### GPU parity: {gpu}",
        "",
        f"`python bench/gpu_parity.py` ({time.strftime('%Y-%m-%d')}), checkpoint: {checkpoint}, "
        f"clip 1x{frames}x224x224 (seeded random). Relative L2 error PyTorch vs TensorFlow.",
        "",
        "| run | torch on | TF on | verdict | Conv3d_1a_7x7 | Mixed_4f | Mixed_5c | Logits rel L2 | Logits max abs | "
        "torch s | TF s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label, report in reports:
        t = report.timings
        torch_s = next((v for k, v in t.items() if k.startswith("torch_")), float("nan"))
        tf_s = next((v for k, v in t.items() if k.startswith("tensorflow_") and "floor" not in k), float("nan"))
        lines.append(
            f"| {label} | {report.devices['torch']} | {report.devices['tensorflow']} | "
            f"{'pass' if report.passed else 'FAIL at ' + str(report.first_diverging)} | "
            + " | ".join(f"{report.row(n).rel_l2:.2e}" for n in ("Conv3d_1a_7x7", "Mixed_4f", "Mixed_5c", "Logits"))
            + f" | {report.row('Logits').max_abs:.2e} | {torch_s:.2f} | {tf_s:.2f} |")
    lines += ["", END]
    return "\n".join(lines)


def _write_section(section: str) -> None:
    from i3d_convert.io.atomic import atomic_output

    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    if START in text and END in text:
        before, rest = text.split(START, 1)
        text = before + section + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    DOC.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(DOC, overwrite=True) as tmp:
        tmp.write_text(text)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None, help="TF checkpoint (default: built-in synthetic one)")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--no-write", action="store_true", help="print the table, do not touch docs/")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_parity: no CUDA GPU visible to PyTorch here; nothing measured "
              "(docs/verify.md says so; run this on a machine with a GPU).")
        return 0
    from i3d_convert.verification.verify import verify

    gpu = torch.cuda.get_device_name(0)
    cache: dict = {}
    reports = []
    for label, kwargs in RUNS:
        report = verify(args.checkpoint, device="cuda", frames=args.frames, cache=cache, audit=False, **kwargs)
        reports.append((label, report))
        print(f"{label}: {'pass' if report.passed else 'FAIL at ' + str(report.first_diverging)}; "
              f"logits rel L2 {report.row('Logits').rel_l2:.3e}, max |d| {report.row('Logits').max_abs:.3e}; "
              f"torch {report.devices['torch']}, TF {report.devices['tensorflow']}", flush=True)
    section = _markdown(reports, gpu, args.frames, reports[0][1].checkpoint)
    print(section)
    if not args.no_write:
        from i3d_convert.io.atomic import atomic_output

        RESULTS.mkdir(parents=True, exist_ok=True)
        raw = {label: json.loads(report.to_json()) for label, report in reports}
        with atomic_output(RESULTS / "gpu_parity.json", overwrite=True) as tmp:
            tmp.write_text(json.dumps(raw, indent=2) + "\n")
        _write_section(section)
        print(f"wrote {DOC} (gpu-parity section) and {RESULTS / 'gpu_parity.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
