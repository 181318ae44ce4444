"""Benchmark and parity of the two TV-L1 backends: OpenCV's DualTVL1 and its PyTorch port.

Modes (each prints one JSON line per measurement, after a header naming the machine and load):

* ``--accuracy``: the torch port against ``cv2.optflow`` with OpenCV's default parameters on every
  frame pair of DeepMind's sample GIF (gray, 224x224; ``--pairs N`` for the first N) and on textured
  224x224 pairs with known sub-pixel translation, rotation and zoom. The reference is OpenCV's
  portable code path (what the ``opencv`` backend runs); beside it, OpenCV's default (optimized)
  path against the portable one and OpenCV's 1-ulp floor (its flow moved when 1 % of the input
  pixels change by one float32 ulp): identical pairs, mean / 99.9th percentile / max end-point
  error (EPE), the mean EPE to the true flow, and the flow stream's ``pool`` features (synthetic
  calibrated weights): relative L2.
* ``--cuda-variant``: OpenCV's CUDA algorithm (torch, ``algorithm="opencv-cuda"``) against OpenCV's
  CPU one (``cv2.optflow``, portable path), both with their defaults, on the GIF pairs
  (``--pairs``/``--every``) and the textured pairs: mean and 99.9th percentile EPE between the two,
  each one's mean EPE to the true flow (8 px inside the border), and the ``pool`` features' relative L2.
* ``--speed``: pairs/s at 224x224 and 256x340 (``--sizes``) on the same consecutive GIF pairs for
  every row (``--speed-pairs``, default 16; resized with ``cv2.resize`` for other sizes): OpenCV
  (portable and default paths) with 1 and 2 threads and two pairs at a time, the torch port at
  batch 1..32 on the CPU (``--batches``; eager, and ``--compiled``), each row saying whether its
  flows equal OpenCV's, and on CUDA when present (batch 1 and 32, TF32 off).

    python bench/flow.py --accuracy            # all 78 pairs
    python bench/flow.py --accuracy --every 5  # pairs 0, 5, .., 75
    python bench/flow.py --speed --batches 1,8,32 --compiled
    python bench/flow.py --cuda-variant --every 10
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe, machine_info  # noqa: E402

from i3d_convert.flow import tvl1  # noqa: E402
from i3d_convert.flow.synthetic import textured_pair  # noqa: E402
from i3d_convert.flow.tvl1_torch import tvl1_flow_batch  # noqa: E402

GIF = Path(__file__).resolve().parent.parent / "tests" / "data" / "kinetics-i3d" / "v_CricketShot_g04_c01_rgb.gif"
MOTIONS = {"translation": dict(shift=(1.37, -0.61)), "rotation": dict(angle_deg=2.0),
           "zoom": dict(zoom=1.03), "mixed": dict(shift=(0.4, 0.7), angle_deg=-1.5, zoom=0.98)}


def gif_gray() -> np.ndarray:
    from PIL import Image, ImageSequence

    with Image.open(GIF) as im:
        rgb = np.stack([np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(im)])
    return tvl1.to_gray(rgb)


def epe(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sqrt(((a.astype(np.float64) - b) ** 2).sum(-1))


def torch_pairs(gray: np.ndarray, batch: int, device: str = "cpu", compile: bool = False) -> np.ndarray:
    t = torch.from_numpy(gray)
    out = []
    for s in range(0, len(gray) - 1, batch):
        chunk = t[s:min(s + batch, len(gray) - 1) + 1].to(device)
        out.append(tvl1_flow_batch(chunk[:-1], chunk[1:], compile=compile).cpu().numpy())
    return np.concatenate(out)


def opencv_floor(prev: np.ndarray, nxt: np.ndarray, algo) -> np.ndarray:
    """OpenCV's flow of ``prev`` with 1 % of its pixels one float32 ulp higher, minus its flow of the input."""
    x0 = prev.astype(np.float32)
    hit = np.random.default_rng(1).random(x0.shape) < 0.01
    x0[hit] = np.nextafter(x0[hit], np.float32(1e9))
    with tvl1.portable_opencv():
        moved = algo.calc(x0 / np.float32(255), nxt.astype(np.float32) / np.float32(255), None)
        return epe(moved, algo.calc(prev, nxt, None))


def opencv_default_path(prev: np.ndarray, nxt: np.ndarray, algo) -> np.ndarray:
    """OpenCV's flow on its default (optimized: IPP resize, AVX2+FMA remap) code path."""
    import cv2

    assert cv2.useOptimized()
    return algo.calc(prev, nxt, None)


def summary(e: np.ndarray) -> dict:
    return {"mean_epe": round(float(e.mean()), 5), "p99_9_epe": round(float(np.percentile(e, 99.9)), 4),
            "max_epe": round(float(e.max()), 3)}


def pool_features(*flows: np.ndarray) -> list:
    """Flow-stream ``pool`` features of each ``[T, H, W, 2]`` flow (synthetic calibrated weights)."""
    from i3d_convert.weights.synthetic import write_synthetic_checkpoint
    from i3d_convert.conversion.tf_to_torch import convert_to_file
    from i3d_convert.dataset.features import extract_features
    from i3d_convert.weights.factory import i3d

    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "flow.safetensors"
        convert_to_file(write_synthetic_checkpoint(Path(tmp) / "ckpt", "flow_imagenet"), weights)
        model = i3d("flow_imagenet", weights=str(weights))
        return [extract_features(model, tvl1.flow_to_input(f), window=len(f)).features for f in flows]


def pool_rel_l2(flow_a: np.ndarray, flow_b: np.ndarray) -> float:
    from i3d_convert.verification.metrics import difference

    return float(difference(*pool_features(flow_a, flow_b)).rel_l2)


def compare(ours: np.ndarray, portable: np.ndarray, default: np.ndarray, floor: np.ndarray) -> dict:
    """torch vs OpenCV's portable path (the reference), and OpenCV's own spreads beside it."""
    return {"torch_vs_opencv": {"identical_pairs": int(sum(np.array_equal(a, b) for a, b in zip(ours, portable))),
                                "of": len(ours), **summary(epe(ours, portable))},
            "opencv_default_vs_portable_path": summary(epe(default, portable)),
            "opencv_1ulp_floor": summary(floor)}


def accuracy(pairs: int, every: int, batch: int) -> None:
    from i3d_convert.verification.metrics import difference

    algo = tvl1.TVL1Params().create()
    gray = gif_gray()
    starts = list(range(0, min(pairs, len(gray) - 1), every))
    portable = tvl1.tvl1_flow(gray[: starts[-1] + 2])[starts]
    default = np.stack([opencv_default_path(gray[t], gray[t + 1], algo) for t in starts])
    t = torch.from_numpy(gray)
    ours = np.concatenate([tvl1_flow_batch(t[starts[s:s + batch]], t[[k + 1 for k in starts[s:s + batch]]]).numpy()
                           for s in range(0, len(starts), batch)])
    floor = np.stack([opencv_floor(gray[t], gray[t + 1], algo) for t in starts])
    f_ours, f_portable, f_default = pool_features(ours, portable, default)
    print(json.dumps({"set": "gif", "pairs": f"{starts[0]}..{starts[-1]} every {every}",
                      **compare(ours, portable, default, floor),
                      "pool_rel_l2": {"torch_vs_opencv": float(difference(f_ours, f_portable).rel_l2),
                                      "opencv_default_vs_portable_path": float(difference(f_default, f_portable).rel_l2)}}),
          flush=True)
    for name, motion in MOTIONS.items():
        frames, truth = textured_pair(224, 224, seed=len(name), **motion)
        portable = tvl1.tvl1_flow(frames)
        default = opencv_default_path(frames[0], frames[1], algo)[None]
        ours = torch_pairs(frames, 1)
        inner = (slice(None), slice(8, -8), slice(8, -8))
        to_truth = {k: float(epe(f, truth[None])[inner].mean()) for k, f in
                    (("opencv", portable), ("torch", ours), ("opencv_default_path", default))}
        print(json.dumps({"set": name, **compare(ours, portable, default, opencv_floor(frames[0], frames[1], algo)[None]),
                          "mean_epe_to_truth": {k: round(v, 5) for k, v in to_truth.items()}}), flush=True)


def cuda_variant(pairs: int, every: int, batch: int) -> None:
    from i3d_convert.flow.tvl1_cuda_variant import tvl1_cuda_flow_batch

    gray = gif_gray()
    starts = list(range(0, min(pairs, len(gray) - 1), every))
    cpu = tvl1.tvl1_flow(gray[: starts[-1] + 2])[starts]
    t = torch.from_numpy(gray)
    cuda = np.concatenate([tvl1_cuda_flow_batch(t[starts[s:s + batch]], t[[k + 1 for k in starts[s:s + batch]]]).numpy()
                           for s in range(0, len(starts), batch)])
    e = epe(cuda, cpu)
    print(json.dumps({"set": "gif", "pairs": starts, "cuda_variant_vs_opencv_cpu": summary(e),
                      "worst_pair_mean_epe": round(float(e.reshape(len(e), -1).mean(1).max()), 5),
                      "mean_flow_magnitude": {"cpu": round(float(np.linalg.norm(cpu, axis=-1).mean()), 4),
                                              "cuda_variant": round(float(np.linalg.norm(cuda, axis=-1).mean()), 4)},
                      "pool_rel_l2": pool_rel_l2(cuda, cpu)}), flush=True)
    for name, motion in MOTIONS.items():
        frames, truth = textured_pair(224, 224, seed=len(name), **motion)
        ref = tvl1.tvl1_flow(frames)[0]
        f = torch.from_numpy(frames)
        ours = tvl1_cuda_flow_batch(f[:1], f[1:])[0].numpy()
        inner = (slice(8, -8), slice(8, -8))
        print(json.dumps({"set": name, "cuda_variant_vs_opencv_cpu": summary(epe(ours, ref)),
                          "mean_epe_to_truth": {"opencv_cpu": round(float(epe(ref, truth)[inner].mean()), 5),
                                                "cuda_variant": round(float(epe(ours, truth)[inner].mean()), 5)}}),
              flush=True)


def timed(fn, warmup=None) -> float:
    if warmup is not None:
        warmup()  # compilation, allocations, lazy imports
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def gif_at(height: int, width: int, frames: int) -> np.ndarray:
    """The first ``frames`` gray GIF frames at ``height x width`` (``cv2.resize`` INTER_LINEAR when
    not 224x224): real content, so that TV-L1 converges as on video (unrelated images take every
    iteration and would time the worst case)."""
    import cv2

    gray = gif_gray()[:frames]
    if (height, width) == gray.shape[1:]:
        return gray
    return np.stack([cv2.resize(f, (width, height), interpolation=cv2.INTER_LINEAR) for f in gray])


def speed(sizes, batches, threads: int, compiled: bool, pairs: int) -> None:
    """Every row times the same ``pairs`` consecutive GIF pairs, so the rows compare."""
    import cv2

    torch.set_num_threads(threads)
    for h, w in sizes:
        gray = gif_at(h, w, pairs + 1)
        n_pairs = len(gray) - 1
        algo = tvl1.TVL1Params().create()
        for n in (1, 2):
            cv2.setNumThreads(n)
            dt = timed(lambda: tvl1.tvl1_flow(gray))
            print(json.dumps({"size": f"{h}x{w}", "pairs": n_pairs, "backend": "opencv", "path": "portable",
                              "cv2_threads": n, "pairs_per_s": round(n_pairs / dt, 3)}), flush=True)
            dt = timed(lambda: [opencv_default_path(a, b, algo) for a, b in zip(gray[:-1], gray[1:])])
            print(json.dumps({"size": f"{h}x{w}", "pairs": n_pairs, "backend": "opencv", "path": "default",
                              "cv2_threads": n, "pairs_per_s": round(n_pairs / dt, 3)}), flush=True)
        cv2.setNumThreads(1)
        dt = timed(lambda: tvl1.tvl1_flow(gray, workers=2))
        print(json.dumps({"size": f"{h}x{w}", "pairs": n_pairs, "backend": "opencv", "path": "portable",
                          "cv2_threads": 1, "pair_threads": 2, "pairs_per_s": round(n_pairs / dt, 3)}), flush=True)
        reference = tvl1.tvl1_flow(gray)
        for mode in ("eager", "compiled") if compiled else ("eager",):
            for b in batches:
                out = []
                # warm-up: eager on one pair (allocator, lazy imports); compiled on the same batch
                # shape (the compiled loop specialises batch 1 and recompiles for other shapes)
                warm = gray[: b + 1] if mode == "compiled" else gray[:2]
                dt = timed(lambda: out.append(torch_pairs(gray, b, compile=mode == "compiled")),
                           warmup=lambda: torch_pairs(warm, len(warm) - 1, compile=mode == "compiled"))
                print(json.dumps({"size": f"{h}x{w}", "pairs": n_pairs, "backend": "torch", "mode": mode,
                                  "device": "cpu", "torch_threads": threads, "batch": b,
                                  "pairs_per_s": round(n_pairs / dt, 3),
                                  "equals_opencv": bool(np.array_equal(out[0], reference))}), flush=True)
        if torch.cuda.is_available():
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
            many = gif_at(h, w, 78 + 1)
            big = np.concatenate([many] * 3)[:3 * 78 + 1]  # 234 pairs (two seams between GIF repeats)
            for b in (1, 32):
                out = []
                dt = timed(lambda: (out.append(torch_pairs(big[: 64 + 1], b, "cuda")), torch.cuda.synchronize()),
                           warmup=lambda: torch_pairs(big[: b + 1], b, "cuda"))
                cpu = torch_pairs(big[:3], 2)
                print(json.dumps({"size": f"{h}x{w}", "pairs": 64, "backend": "torch",
                                  "device": torch.cuda.get_device_name(), "batch": b,
                                  "pairs_per_s": round(64 / dt, 2),
                                  "first_pairs_equal_cpu": bool(np.array_equal(out[0][:2], cpu))}), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--accuracy", action="store_true")
    ap.add_argument("--speed", action="store_true")
    ap.add_argument("--cuda-variant", action="store_true", help="OpenCV's CUDA algorithm against its CPU one")
    ap.add_argument("--pairs", type=int, default=78, help="accuracy: GIF pairs (the first N)")
    ap.add_argument("--every", type=int, default=1, help="accuracy: every K-th of those pairs")
    ap.add_argument("--batch", type=int, default=8, help="accuracy: torch batch")
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--speed-pairs", type=int, default=16, help="speed: consecutive GIF pairs timed by every row")
    ap.add_argument("--sizes", default="224x224,256x340")
    ap.add_argument("--threads", type=int, default=2, help="speed: torch threads")
    ap.add_argument("--compiled", action="store_true", help="speed: also the torch.compile'd inner iteration")
    args = ap.parse_args()
    print("#", describe(machine_info(torch.get_num_threads())), flush=True)
    if args.accuracy:
        accuracy(args.pairs, args.every, args.batch)
    if args.cuda_variant:
        cuda_variant(args.pairs, args.every, args.batch)
    if args.speed:
        sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
        speed(sizes, [int(b) for b in args.batches.split(",")], args.threads, args.compiled, args.speed_pairs)


if __name__ == "__main__":
    main()
