"""Benchmark: exact float32 CPU inference of InceptionI3d, side by side.

In one run, on the same clip and the same number of threads:

* ``i3d_convert``: the default model (eval + inference_mode: folded batch norm,
  channels_last_3d, every convolution on oneDNN);
* ``tensorflow``: the independent TF reference network (plain ``tf.nn``), traced
  into a graph with ``tf.function`` (TF's fast path), and as ``tf_forward`` runs
  it eagerly for ``verify``;
* ``naive port``: the common PyTorch port's approach (``i3d_convert.models.ports.PiergiajI3D``:
  ``F.pad`` before every layer, NCDHW, conv -> BatchNorm3d -> ReLU);
* ``torch.mm``: a large float32 matmul, the machine's attainable GFLOP/s.

The network's FLOPs are counted from the model (2 x multiply-adds of every
conv, from hooks), so achieved GFLOP/s is a fraction of what the CPU can do.
Also reports bfloat16 on CPU (speed and accuracy cost against float32).

    python bench/inference.py            # 1x3x64x224x224, 5 timed runs each
    python bench/inference.py --quick    # 1x3x32x224x224, 3 runs: < 3 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from i3d_convert import InceptionI3d  # noqa: E402
from i3d_convert.names.layouts import to_layout  # noqa: E402
from i3d_convert.verification.metrics import difference, ncthw_to_nthwc  # noqa: E402
from i3d_convert.models.ports import PiergiajI3D  # noqa: E402
from i3d_convert.conversion.synthetic import calibrated_state_dict, random_clip  # noqa: E402


def timed(fn, repeats: int) -> list:
    fn()  # warm-up (oneDNN primitive creation, folded weights)
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


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


def matmul_gflops(threads: int, n: int = 4096, repeats: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    times = timed(lambda: torch.mm(a, b), repeats)
    return 2 * n**3 / min(times) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="32 frames, 3 runs, 10 accuracy clips")
    parser.add_argument("--frames", type=int, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--accuracy-clips", type=int, default=None, help="seeded clips for the bf16 accuracy check")
    parser.add_argument("--no-tf", action="store_true", help="skip the TensorFlow reference")
    args = parser.parse_args()
    frames = args.frames or (32 if args.quick else 64)
    repeats = args.repeats or (3 if args.quick else 5)
    n_acc = args.accuracy_clips or (10 if args.quick else 100)
    torch.set_num_threads(args.threads)

    state = calibrated_state_dict(seed=0)
    model = InceptionI3d().eval()
    model.load_state_dict(state)
    port = PiergiajI3D().eval()
    port.load_state_dict(to_layout(state, "piergiaj"))
    clip = random_clip((1, 3, frames, 224, 224), seed=1)
    flops = count_flops(model, clip)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{args.threads} threads; clip 1x3x{frames}x224x224 float32; {flops / 1e9:.1f} GFLOP per clip "
          f"({flops / 2e9:.1f} GMAC)")

    results = {}
    with torch.inference_mode():
        results["i3d_convert"] = timed(lambda: model(clip), repeats)
        results["naive port"] = timed(lambda: port(clip), repeats)
        reference = model(clip)
        naive = port.video_logits(clip)
    if not args.no_tf:
        from i3d_convert.reference.tf_forward import tf_forward
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        variables = {k: v for k, v in __import__("i3d_convert.names.tf1", fromlist=["x"]).torch_to_tf_arrays(
            {k: v.numpy() for k, v in state.items()}).items()}
        nthwc = ncthw_to_nthwc(clip.numpy())
        # TensorFlow at its best: the same tf.nn network traced once into a graph (tf.function,
        # grappler on, weights as constants) returning only the logits. Uses tf_forward's
        # internals on purpose: tf_forward itself is eager and returns every endpoint as numpy.
        from i3d_convert.reference import network as ref
        from i3d_convert.reference.tf_forward import _TFOps

        checked, _ = ref.check_variables(variables, ref.detect_scope(list(variables)), False, 3)
        ops = _TFOps(checked, tf.float32, 1e-3, ref.detect_scope(list(variables)))
        graph = tf.function(lambda x: ref.inception_i3d(ops, x, "Logits")["Logits"])
        x_tf = tf.constant(nthwc)
        results["tensorflow (tf.function)"] = timed(lambda: graph(x_tf).numpy(), repeats)
        results["tensorflow (eager tf_forward)"] = timed(lambda: tf_forward(variables, nthwc), repeats)
        tf_logits = graph(x_tf).numpy()
        print(f"check: logits vs TF rel L2 {difference(reference.numpy(), tf_logits).rel_l2:.2e}; "
              f"naive port vs TF {difference(naive.numpy(), tf_logits).rel_l2:.2e}")
    mm = matmul_gflops(args.threads)

    ours = statistics.median(results["i3d_convert"])
    print(f"\n{'path':30s} {'median s':>9s} {'min s':>8s} {'clips/s':>8s} {'GFLOP/s':>8s} {'ours is':>9s}")
    summary = {}
    for name, times in results.items():
        med = statistics.median(times)
        summary[name] = {"median_s": med, "min_s": min(times), "clips_per_s": 1 / med, "gflops": flops / med / 1e9}
        print(f"{name:30s} {med:9.3f} {min(times):8.3f} {1 / med:8.3f} {flops / med / 1e9:8.1f} {med / ours:8.2f}x")
    print(f"torch.mm 4096^2: {mm:.1f} GFLOP/s; i3d_convert reaches {flops / ours / 1e9 / mm:.0%} of it")
    summary["matmul_gflops"] = mm

    # bfloat16 on CPU: speed and accuracy cost -- only where oneDNN has a bf16 convolution.
    try:
        x, w = torch.zeros(1, 8, 3, 8, 8, dtype=torch.bfloat16), torch.zeros(8, 8, 3, 3, 3, dtype=torch.bfloat16)
        torch.ops.aten.mkldnn_convolution(x, w, None, [1, 1, 1], [1, 1, 1], [1, 1, 1], 1)
    except RuntimeError as exc:
        print(f"bfloat16: skipped, no fast bf16 convolution on this CPU ({str(exc).splitlines()[0]}); "
              "PyTorch's fallback kernel takes minutes per clip")
        summary["bfloat16"] = {"skipped": str(exc).splitlines()[0]}
        print(json.dumps(summary))
        return
    bf16 = InceptionI3d().eval()
    bf16.load_state_dict(state)
    bf16 = bf16.to(torch.bfloat16)
    with torch.inference_mode():
        t_bf16 = statistics.median(timed(lambda: bf16(clip.to(torch.bfloat16)), repeats))
        max_diff, agree = 0.0, 0
        for seed in range(n_acc):
            c = random_clip((1, 3, 16, 224, 224), seed=100 + seed)
            a, b = model(c), bf16(c.to(torch.bfloat16)).float()
            max_diff = max(max_diff, float((a - b).abs().max()))
            agree += int(a.argmax() == b.argmax())
    print(f"bfloat16: {t_bf16:.3f} s median ({ours / t_bf16:.2f}x float32's speed); on {n_acc} seeded 16-frame clips "
          f"max |logit diff| {max_diff:.3f}, top-1 agreement {agree}/{n_acc}")
    summary["bfloat16"] = {"median_s": t_bf16, "max_logit_diff": max_diff, "top1_agreement": f"{agree}/{n_acc}"}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
