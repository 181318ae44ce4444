"""Benchmark: dataset features, stage by stage and end to end.

Generates a folder of 320x240 30 fps mp4 videos (seeded texture sliding 2 px a frame), then
measures on this machine:

* decode: ``io.video_decode.decode`` with DeepMind's recipe (25 fps, 256, crop 224): frames/s;
* flow: TV-L1 (OpenCV, DeepMind's parameters) on 224x224 frame pairs: pairs/s;
* model: InceptionI3d ``pool`` on 16-frame 224x224 windows, batch 4 (RGB 3 and flow 2 channels): windows/s;
* end to end: ``run_feature_job`` over the folder, RGB and flow, with 0, 1 and 2 DataLoader
  workers: videos/s and windows/s.

Weights are synthetic (speed does not depend on their values). Prints one JSON row per
measurement and a header naming the CPU (model, AVX2/AVX-512/AMX flags) and thread count.

    python bench/features.py            # 4 videos of 2 s
    python bench/features.py --quick    # 2 videos of 1 s
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from i3d_convert.weights.synthetic import write_synthetic_checkpoint
from i3d_convert.conversion.tf_to_torch import convert_to_file
from i3d_convert.flow.tvl1 import TVL1Params, tvl1_flow
from i3d_convert.dataset.recipe import FeatureSettings
from i3d_convert.dataset.runner import FeatureJob, run_feature_job
from i3d_convert.dataset.features import extract_features
from i3d_convert.weights.factory import i3d
from i3d_convert.io.video_decode import DecodeOptions, decode
from i3d_convert.io.video_write import write_test_video


def cpu_description() -> dict:
    flags = set()
    model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    wanted = ["avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"]
    return {"cpu": model, "flags": [f for f in wanted if f in flags], "threads": torch.get_num_threads(),
            "torch": torch.__version__}


def make_videos(folder: Path, count: int, seconds: float) -> list:
    rng = np.random.default_rng(0)
    frames = int(30 * seconds)
    base = rng.integers(0, 256, (240, 320 + 2 * frames, 3), dtype=np.uint8)
    paths = []
    for i in range(count):
        clip = np.stack([base[:, 2 * (frames - t): 2 * (frames - t) + 320] for t in range(frames)])
        paths.append(folder / f"video{i}.mp4")
        write_test_video(paths[-1], clip, fps=30)
    return paths


def rate(count: float, seconds: float) -> float:
    return round(count / seconds, 3)


def bench_stages(paths: list, weights: dict) -> list:
    rows = []
    start = time.perf_counter()
    decoded = [decode(p, DecodeOptions()) for p in paths]
    n_frames = sum(len(d) for d in decoded)
    rows.append({"stage": "decode 320x240 mp4 -> 25 fps 224x224", "frames_per_s": rate(n_frames, time.perf_counter() - start)})
    pairs = decoded[0][:9]
    start = time.perf_counter()
    tvl1_flow(pairs, TVL1Params())
    rows.append({"stage": "TV-L1 224x224", "pairs_per_s": rate(len(pairs) - 1, time.perf_counter() - start)})
    for stream, channels in (("rgb", 3), ("flow", 2)):
        model = i3d(f"{stream}_imagenet", weights=weights[stream], final_endpoint="Mixed_5c")
        clip = np.random.default_rng(1).uniform(-1, 1, (32, 224, 224, channels)).astype(np.float32)
        extract_features(model, clip, window=16, stride=16, batch_size=2)  # warm-up
        start = time.perf_counter()
        result = extract_features(model, clip, window=16, stride=4, batch_size=4)
        rows.append({"stage": f"model {stream} pool, 16x224x224 windows, batch 4",
                     "windows_per_s": rate(len(result.windows), time.perf_counter() - start)})
    return rows


def bench_end_to_end(folder: Path, weights: dict, workers: int, stream: str) -> dict:
    settings = FeatureSettings(stream=stream, endpoint="pool", window=16, stride=16, batch_size=4)
    with tempfile.TemporaryDirectory() as out:
        job = FeatureJob(folder, Path(out) / "features", settings, rgb_weights=str(weights["rgb"]),
                         flow_weights=str(weights["flow"]), device="cpu", workers=workers)
        start = time.perf_counter()
        summary = run_feature_job(job)
        seconds = time.perf_counter() - start
        lines = (Path(out) / "features" / "manifest.jsonl").read_text().splitlines()
        windows = sum(json.loads(line).get("windows", 0) for line in lines)
    return {"stage": f"end to end {stream}, {workers} workers", "videos_per_s": rate(summary.computed, seconds),
            "windows_per_s": rate(windows, seconds), "seconds": round(seconds, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    print(json.dumps(cpu_description()))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        weights = {}
        for stream in ("rgb", "flow"):
            weights[stream] = tmp / f"{stream}.safetensors"
            convert_to_file(write_synthetic_checkpoint(tmp / stream, f"{stream}_imagenet"), weights[stream])
        folder = tmp / "videos"
        folder.mkdir()
        paths = make_videos(folder, 2 if args.quick else 4, 1.0 if args.quick else 2.0)
        for row in bench_stages(paths, weights):
            print(json.dumps(row))
        for stream in ("rgb", "flow"):
            for workers in (0, 1, 2):
                print(json.dumps(bench_end_to_end(folder, weights, workers, stream)))


if __name__ == "__main__":
    main()
