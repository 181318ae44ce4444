"""Time i3d-inflate on full-size 2D networks (a benchmark, not a test).

Measures :func:`i3d_convert.inflation.api.inflate` -- read the file, fold batch-norm
scales, inflate every kernel, map onto InceptionI3d's keys -- and the whole
:func:`inflate_to_file` (plus the atomic ``.safetensors`` write), for:

* torchvision ``googlenet`` with aux heads, as the published ``.pth`` is (13.0 M
  values, 52 MB; the 6.6 M-parameter / 26.6 MB network without them is what gets inflated);
* TF-slim ``InceptionV1`` as a V2 bundle (6.6 M values, 26.6 MB) -- or, with
  ``--slim FILE``, a V1 file such as the real ``inception_v1.ckpt``;
* timm ``resnet18`` through :func:`inflate_module` (11.7 M values, 46.8 MB).

Weights are random (the work does not depend on their values). Each case runs
``--repeat`` times after one warm-up call (which pays for lazy imports); the
table shows the warm-up, the best and the median.

Usage::

    .venv/bin/python bench/inflate.py [--repeat 5] [--slim path/to/inception_v1.ckpt]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch  # before TensorFlow-adjacent imports (see tests/conftest.py)
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from i3d_convert.inflation.api import inflate, inflate_to_file  # noqa: E402
from i3d_convert.models.googlenet2d import GoogLeNet2d, slim_arrays  # noqa: E402
from i3d_convert.io.bundle_writer import write_checkpoint  # noqa: E402


def _timed(fn, repeat: int):
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return first, min(times), statistics.median(times)


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.platform()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--slim", type=Path, help="an existing slim checkpoint (V1 file or V2 prefix)")
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tv = torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=True)
        tv_path = tmp / "googlenet.pth"
        torch.save(tv.state_dict(), tv_path)
        if args.slim is None:
            slim_path = tmp / "inception_v1" / "model.ckpt"
            slim_path.parent.mkdir()
            write_checkpoint(slim_path, slim_arrays(GoogLeNet2d()))
            slim_files = [Path(f"{slim_path}.index"), Path(f"{slim_path}.data-00000-of-00001")]
        else:
            slim_path = args.slim
            slim_files = [p for p in (args.slim, Path(f"{args.slim}.index"), Path(f"{args.slim}.data-00000-of-00001")) if p.is_file()]
        import timm

        resnet = timm.create_model("resnet18", pretrained=False)
        resnet_path = tmp / "resnet18.pth"
        torch.save(resnet.state_dict(), resnet_path)
        out = tmp / "out.safetensors"
        cases = [
            ("torchvision googlenet .pth", [tv_path], lambda: inflate(tv_path),
             lambda: inflate_to_file(tv_path, out, overwrite=True)),
            ("slim InceptionV1 " + ("V2 bundle" if args.slim is None else args.slim.name), slim_files,
             lambda: inflate(slim_path), lambda: inflate_to_file(slim_path, out, overwrite=True)),
            ("timm resnet18 .pth", [resnet_path], lambda: inflate(resnet_path, source_format="timm:resnet18"),
             lambda: inflate_to_file(resnet_path, out, overwrite=True, source_format="timm:resnet18")),
        ]
        for label, files, api, to_file in cases:
            size = sum(p.stat().st_size for p in files) / 1e6
            first_timing = _timed(api, args.repeat)
            values = sum(t.numel() for t in api().state_dict.values())
            rows.append((label, size, values, "inflate()", *first_timing))
            rows.append((label, size, values, "inflate_to_file()", *_timed(to_file, args.repeat)))
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs ({_cpu()}); "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads); load average {os.getloadavg()[0]:.1f}")
    print(f"{'source':44s} {'file MB':>8s} {'3D values':>10s} {'call':18s} {'warm-up s':>9s} {'best s':>7s} {'median s':>8s}")
    for label, size, values, call, first, best, median in rows:
        print(f"{label:44s} {size:8.1f} {values / 1e6:9.1f}M {call:18s} {first:9.3f} {best:7.3f} {median:8.3f}")


if __name__ == "__main__":
    main()
