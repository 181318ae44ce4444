"""Benchmark: exact float32 CPU inference of InceptionI3d against TensorFlow, interleaved.

On the same clip, the same weights and the same number of threads, one forward
of each path per round, the paths' order rotated every round, medians over the
rounds (so a burst of load from other jobs lands on every path, not on one):

* ``i3d_convert``: the default model (eval + inference_mode: folded batch norm,
  channels_last_3d, every convolution on oneDNN), given the clip in
  ``channels_last_3d`` -- the NDHWC bytes TensorFlow is given, both prepared
  outside the timing;
* ``tensorflow (tf.function)``: the independent TF reference network (plain
  ``tf.nn``) traced into a graph (grappler on, weights as constants): TF's fast
  path; ``--tf-eager`` adds it run eagerly as ``verify`` does;
* ``naive port``: the common PyTorch port's approach
  (``i3d_convert.models.ports.PiergiajI3D``: ``F.pad`` per layer, NCDHW,
  conv -> BatchNorm3d -> ReLU);
* ``torch.mm 4096^2``: one large float32 matmul per round, the machine's
  attainable GFLOP/s at that moment;
* ``--compile-pools``: the default model with ``compile_max_pools()`` (opt-in,
  the same bits; inductor compiles each pool in the warm-up call);
* ``--bf16``: the default model under ``torch.autocast("cpu", torch.bfloat16)``
  (opt-in, not exact; its accuracy on real weights is bench/bf16_accuracy.py's).

The process runs as the CLI does: ``i3d_convert.device.reuse_freed_memory()``
(glibc keeps freed memory, so a forward does not page-fault its activations
again; ``--default-malloc`` leaves malloc alone). Each path's minor page faults
per call are printed next to its time.

FLOPs are counted from the model (2 x multiply-adds of every convolution). The
output starts with the CPU model, its SIMD flags (AVX2 / AVX-512 / bf16 / AMX),
threads and load average; ``--json-out FILE`` appends one machine-tagged JSON
row per run, for docs/benchmarks.md's per-machine tables.

    python bench/inference.py --shape 1x3x32x224x224 --repeats 5
    python bench/inference.py --shape 8x3x16x224x224 --repeats 5 --json-out bench-results.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Tuple

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe, machine_info  # noqa: E402

from i3d_convert import InceptionI3d  # noqa: E402
from i3d_convert.device import reuse_freed_memory  # noqa: E402
from i3d_convert.weights.synthetic import calibrated_state_dict, random_clip  # noqa: E402
from i3d_convert.models.ports import PiergiajI3D  # noqa: E402
from i3d_convert.conversion.layouts import to_layout  # noqa: E402
from i3d_convert.verification.metrics import difference, ncthw_to_nthwc  # noqa: E402

MATMUL = "torch.mm 4096^2"
MATMUL_N = 4096


def count_flops(model: InceptionI3d, clip: torch.Tensor) -> float:
    """2 x multiply-adds of every convolution (pools, batch norm and ReLU are not counted)."""
    from i3d_convert.models.i3d import Unit3D

    total = [0]

    def hook(module, inputs, output):
        total[0] += 2 * output.numel() * module.conv.weight[0].numel()  # in_channels * kT * kH * kW

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, Unit3D)]
    with torch.inference_mode():
        model(clip)
    for h in handles:
        h.remove()
    return float(total[0])


def interleaved(paths: Dict[str, Callable[[], object]], repeats: int
                ) -> Tuple[Dict[str, List[float]], List[float], Dict[str, float]]:
    """Seconds of each path per round (one call each, order rotated every round), the 1-min load
    per round, and each path's minor page faults per call (the process's, during that call)."""
    for fn in paths.values():
        fn()  # warm-up: oneDNN primitive creation, folded weights, graph tracing
    names = list(paths)
    times: Dict[str, List[float]] = {name: [] for name in names}
    faults = {name: 0 for name in names}
    loads = []
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            start = time.perf_counter()
            paths[name]()
            times[name].append(time.perf_counter() - start)
            faults[name] += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
        loads.append(os.getloadavg()[0])
    return times, loads, {name: count / repeats for name, count in faults.items()}


def tensorflow_graph(state: Dict[str, torch.Tensor], threads: int):
    """(TF's reference network traced with tf.function returning the logits, the eager tf_forward, tf)."""
    import tensorflow as tf

    from i3d_convert.conversion.tf_layout import torch_to_tf_arrays
    from i3d_convert.reference import network as ref
    from i3d_convert.reference.tf_forward import _TFOps, tf_forward

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    variables = dict(torch_to_tf_arrays({k: v.numpy() for k, v in state.items()}))
    scope = ref.detect_scope(list(variables))
    checked, _ = ref.check_variables(variables, scope, False, 3)
    # tf_forward's internals on purpose: tf_forward itself is eager and returns every endpoint.
    ops = _TFOps(checked, tf.float32, 1e-3, scope)
    graph = tf.function(lambda x: ref.inception_i3d(ops, x, "Logits")["Logits"])
    return graph, (lambda nthwc: tf_forward(variables, nthwc)), tf


def parse_shape(text: str) -> Tuple[int, ...]:
    shape = tuple(int(n) for n in text.lower().split("x"))
    if len(shape) != 5 or shape[1] != 3:
        raise SystemExit(f"--shape {text!r}: expected NxCxTxHxW with C=3, e.g. 8x3x16x224x224")
    return shape


def build_paths(args, state, clip, flops_note: Dict[str, object]) -> Dict[str, Callable[[], object]]:
    model = InceptionI3d().eval()
    model.load_state_dict(state)
    # The same bytes TensorFlow is given (NDHWC; channels_last_3d is that layout), prepared outside the timing on both sides.
    clip_ndhwc = clip.contiguous(memory_format=torch.channels_last_3d)
    paths: Dict[str, Callable[[], object]] = {"i3d_convert": lambda: model(clip_ndhwc)}
    if args.bf16:
        def bf16_forward():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return model(clip_ndhwc)
        paths["i3d_convert bf16 autocast (opt-in)"] = bf16_forward
    if args.compile_pools:
        pooled = InceptionI3d().eval()
        pooled.load_state_dict(state)
        pooled.compile_max_pools()  # compiled and checked per pool during the warm-up call
        paths["i3d_convert compiled pools (opt-in)"] = lambda: pooled(clip_ndhwc)
    if not args.no_naive:
        port = PiergiajI3D().eval()
        port.load_state_dict(to_layout(state, "piergiaj"))
        paths["naive port"] = lambda: port(clip)
    if not args.no_tf:
        graph, eager, tf = tensorflow_graph(state, args.threads)
        nthwc = ncthw_to_nthwc(clip.numpy())
        x_tf = tf.constant(nthwc)
        paths["tensorflow (tf.function)"] = lambda: graph(x_tf).numpy()
        if args.tf_eager:
            paths["tensorflow (eager tf_forward)"] = lambda: eager(nthwc)
        with torch.inference_mode():
            flops_note["logits rel L2 vs TF"] = difference(model(clip).numpy(), graph(x_tf).numpy()).rel_l2
    a, b = torch.randn(MATMUL_N, MATMUL_N), torch.randn(MATMUL_N, MATMUL_N)
    paths[MATMUL] = lambda: torch.mm(a, b)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="1x3x32x224x224", help="clip shape NxCxTxHxW (default 1x3x32x224x224)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds (one call of each path per round)")
    parser.add_argument("--no-tf", action="store_true", help="skip TensorFlow")
    parser.add_argument("--tf-eager", action="store_true", help="also time TF eagerly (tf_forward, as verify runs it)")
    parser.add_argument("--no-naive", action="store_true", help="skip the naive port")
    parser.add_argument("--bf16", action="store_true", help="also time bfloat16 autocast (opt-in, not exact)")
    parser.add_argument("--compile-pools", action="store_true",
                        help="also time InceptionI3d.compile_max_pools() (opt-in, exact; compiles during the warm-up)")
    parser.add_argument("--default-malloc", action="store_true",
                        help="leave glibc's malloc as it is (the CLI applies i3d_convert.device.reuse_freed_memory)")
    parser.add_argument("--json-out", type=Path, help="append one machine-tagged JSON row to this file")
    args = parser.parse_args()
    shape = parse_shape(args.shape)
    torch.set_num_threads(args.threads)
    reusing = False if args.default_malloc else reuse_freed_memory()

    state = calibrated_state_dict(seed=0)
    clip = random_clip(shape, seed=1)
    probe = InceptionI3d().eval()
    probe.load_state_dict(state)
    flops = count_flops(probe, clip)
    notes: Dict[str, object] = {}
    paths = build_paths(args, state, clip, notes)
    info = machine_info(args.threads)
    print(describe(info))
    print(f"clip {args.shape} float32, {flops / 1e9:.1f} GFLOP per batch; {args.repeats} interleaved rounds"
          + "".join(f"; {k} {v:.2e}" for k, v in notes.items()))
    with torch.inference_mode():
        times, loads, faults = interleaved(paths, args.repeats)
    ours = statistics.median(times["i3d_convert"])
    mm_gflops = 2 * MATMUL_N**3 / statistics.median(times[MATMUL]) / 1e9
    print(f"load average (1 min) during the rounds: {min(loads):.2f}-{max(loads):.2f}; "
          f"freed memory reused (glibc mallopt, as the CLI runs): {reusing}")
    print(f"\n{'path':36s} {'median s':>9s} {'min s':>8s} {'clips/s':>8s} {'GFLOP/s':>8s} {'i3d_convert x as fast':>22s} {'faults/call':>11s}")
    rows = {}
    for name, t in times.items():
        med = statistics.median(t)
        if name == MATMUL:
            rows[name] = {"median_s": med, "gflops": mm_gflops, "minor_faults_per_call": faults[name]}
            continue
        rows[name] = {"median_s": med, "min_s": min(t), "clips_per_s": shape[0] / med, "gflops": flops / med / 1e9,
                      "i3d_convert_speedup": med / ours, "times_s": t, "minor_faults_per_call": faults[name]}
        print(f"{name:36s} {med:9.3f} {min(t):8.3f} {shape[0] / med:8.2f} {flops / med / 1e9:8.1f} "
              f"{med / ours:21.2f}x {faults[name]:11.0f}")
    print(f"{MATMUL}: {mm_gflops:.1f} GFLOP/s (median); i3d_convert reaches {flops / ours / 1e9 / mm_gflops:.0%} of it")
    row = {"bench": "inference", "shape": args.shape, "gflop_per_batch": flops / 1e9, "repeats": args.repeats,
           "machine": info, "load_average_rounds": loads, "reuse_freed_memory": reusing, "paths": rows, **notes}
    if args.json_out:
        with open(args.json_out, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"row appended to {args.json_out}")


if __name__ == "__main__":
    main()
