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

``--lengths`` measures instead peak RSS and videos/s of ``features`` against the video's length:
one generated 320x240 25 fps mp4 per length (a one-minute segment repeated), each run in
a fresh process (``ru_maxrss`` of that process; workers 0 so decoding, TV-L1 and the model are all
counted), same settings for every length. ``--kill-resume MINUTES`` then kills a run of that
length after its first checkpoint (SIGKILL), reruns it, and checks the output's bytes against the
uninterrupted run.

    python bench/features.py            # 4 videos of 2 s
    python bench/features.py --quick    # 2 videos of 1 s
    python bench/features.py --lengths 1 10 60 --stream rgb --window 16 --stride 1500
    python bench/features.py --lengths 2 20 --stream flow --window 16 --stride 3000 --kill-resume 20
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import signal
import subprocess
import sys
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


def write_segment(path: Path, seconds: float, fps: int = 25) -> Path:
    """A 320x240 mp4: a seeded texture sliding 2 px a frame, encoded frame by frame (never held whole)."""
    import av

    rng = np.random.default_rng(0)
    tile = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
    base = np.concatenate([tile, tile], axis=1)  # periodic: frame t is columns 2t mod 320 ..
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream("libx264", rate=fps, options={"crf": "23", "preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        for t in range(int(seconds * fps)):
            x = (2 * t) % 320
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(base[:, x: x + 320]), format="rgb24")
            frame.pts = t
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def write_long_video(path: Path, minutes: float, segment: Path) -> Path:
    """``minutes`` of video: the one-minute ``segment`` repeated (packets copied, timestamps shifted:
    no re-encoding, so an hour is written in seconds on a loaded machine)."""
    import av

    with av.open(str(segment)) as source, av.open(str(path), mode="w") as out:
        template = source.streams.video[0]
        stream = out.add_stream_from_template(template)
        packets = [p for p in source.demux(template) if p.size]
        step = max(p.pts + p.duration for p in packets)
        for repeat in range(int(round(minutes))):
            for packet in packets:
                packet.pts += step if repeat else 0
                packet.dts += step if repeat else 0
                packet.stream = stream
                out.mux(packet)
    return path


def child_run(args) -> None:
    """One ``run_feature_job`` in this process; prints its peak RSS and time as one JSON line."""
    settings = FeatureSettings(stream=args.stream, endpoint="pool", window=args.window, stride=args.stride,
                               batch_size=args.batch_size, crops=args.crops)
    job = FeatureJob(args.child, args.outdir, settings, rgb_weights=args.rgb_weights, flow_weights=args.flow_weights,
                     device="cpu", workers=0, checkpoint_seconds=args.checkpoint_seconds)
    start = time.perf_counter()
    summary = run_feature_job(job)
    seconds = time.perf_counter() - start
    print(json.dumps({"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                      "seconds": round(seconds, 1), "computed": summary.computed, "failed": summary.failed}))


def _child_command(args, video: Path, outdir: Path, weights: dict, checkpoint_seconds: float) -> list:
    return [sys.executable, __file__, "--child", str(video), "--outdir", str(outdir), "--stream", args.stream,
            "--window", str(args.window), "--stride", str(args.stride), "--batch-size", str(args.batch_size),
            "--crops", args.crops, "--rgb-weights", str(weights["rgb"]), "--flow-weights", str(weights["flow"]),
            "--checkpoint-seconds", str(checkpoint_seconds)]


def bench_lengths(args, tmp: Path, weights: dict) -> None:
    """Peak RSS and videos/s against length; optionally a kill and resume of one length."""
    outputs = {}
    segment = write_segment(tmp / "segment.mp4", 60)
    for minutes in args.lengths:
        (tmp / f"{minutes:g}min").mkdir()
        video = write_long_video(tmp / f"{minutes:g}min" / f"video{minutes:g}.mp4", minutes, segment)
        outdir = tmp / f"out{minutes:g}"
        proc = subprocess.run(_child_command(args, video, outdir, weights, 1e9), capture_output=True, text=True)
        if proc.returncode:
            raise SystemExit(proc.stderr[-2000:])
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        windows = json.loads((outdir / "manifest.jsonl").read_text().splitlines()[0])["windows"]
        outputs[minutes] = (video, outdir / f"{video.name}.npy")
        print(json.dumps({"stage": f"features {args.stream} {minutes:g} min 320x240 25 fps, window {args.window} "
                                   f"stride {args.stride} batch {args.batch_size} crops {args.crops}",
                          "windows": windows, **row, "videos_per_s": rate(1, row["seconds"]),
                          "load_average": [round(x, 2) for x in os.getloadavg()]}), flush=True)
    if args.kill_resume:
        video, reference = outputs[args.kill_resume]
        outdir = tmp / "killed"
        proc = subprocess.Popen(_child_command(args, video, outdir, weights, 0), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        while proc.poll() is None and not list((outdir / ".partial").rglob("*.npz")):
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        killed = proc.wait() == -signal.SIGKILL  # False: it finished before its first checkpoint
        chunks = len(list((outdir / ".partial").rglob("*.npz")))
        rerun = subprocess.run(_child_command(args, video, outdir, weights, 0), capture_output=True, text=True)
        same = (outdir / f"{video.name}.npy").read_bytes() == reference.read_bytes()
        print(json.dumps({"stage": f"kill -9 after the first checkpoint of the {args.kill_resume:g} min video, rerun",
                          "killed": killed, "chunks_at_kill": chunks, "rerun": json.loads(rerun.stdout.strip().splitlines()[-1]),
                          "same_bytes_as_uninterrupted": same}), flush=True)


def _weights(tmp: Path) -> dict:
    weights = {}
    for stream in ("rgb", "flow"):
        weights[stream] = tmp / f"{stream}.safetensors"
        convert_to_file(write_synthetic_checkpoint(tmp / stream, f"{stream}_imagenet"), weights[stream])
    return weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--lengths", type=float, nargs="*", help="minutes of generated video, one run each")
    parser.add_argument("--stream", default="rgb")
    parser.add_argument("--window", type=int, default=16)
    parser.add_argument("--stride", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--crops", default="center")
    parser.add_argument("--kill-resume", type=float, default=None, help="one of --lengths: kill and rerun it")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--outdir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--rgb-weights", help=argparse.SUPPRESS)
    parser.add_argument("--flow-weights", help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint-seconds", type=float, default=300.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child_run(args)
    print(json.dumps(cpu_description()))
    if args.lengths:
        with tempfile.TemporaryDirectory() as tmp:
            return bench_lengths(args, Path(tmp), _weights(Path(tmp)))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        weights = _weights(tmp)
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
