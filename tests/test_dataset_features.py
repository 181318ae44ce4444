"""Dataset-scale features: a generated folder of short videos through ``i3d-convert features SRC -o OUTDIR``.

Small settings keep it fast on 2 cores (resize 72, crop 64, 16-frame windows); the recipe's
geometry and frame-rate rules are tested at full size in tests/test_video_decode.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from i3d_convert.conversion.tf_to_torch import convert_to_file
from i3d_convert.dataset.recipe import FeatureSettings, flow_input, rgb_input
from i3d_convert.dataset.runner import FeatureJob, run_feature_job
from i3d_convert.dataset.sources import list_sources
from i3d_convert.dataset.features import extract_features
from i3d_convert.weights.factory import i3d
from i3d_convert.io.video_decode import DecodeOptions, decode
from i3d_convert.io.video_write import write_test_video
from i3d_convert.verification.metrics import difference

DECODE = DecodeOptions(fps=25, resize_shorter=72, crop=64)
SETTINGS = FeatureSettings(stream="rgb", endpoint="pool", window=16, stride=8, batch_size=2, decode=DECODE)
#: Args of the CLI equal to SETTINGS.
CLI_SETTINGS = ["--resize", "72", "--crop", "64", "--window", "16", "--stride", "8", "--batch-size", "2"]
GOOD_VIDEOS = ("a/clip1.mp4", "a/b/clip2.mkv", "clip3.gif", "clip4.avi")


def moving_frames(count: int, height: int, width: int, seed: int) -> np.ndarray:
    """A textured pattern sliding right by 2 px a frame (real motion for TV-L1)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (height, width + 2 * count, 3), dtype=np.uint8)
    base = np.asarray(torch.nn.functional.avg_pool2d(torch.from_numpy(base).permute(2, 0, 1)[None].float(), 5, 1, 2)[0]
                      .permute(1, 2, 0).round().byte())
    return np.stack([base[:, 2 * (count - t): 2 * (count - t) + width] for t in range(count)])


@pytest.fixture(scope="module")
def video_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("videos")
    for i, name in enumerate(GOOD_VIDEOS):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        write_test_video(path, moving_frames(24 + 2 * i, 60, 90, seed=i), fps=30 if i % 2 else 25)
    (root / "a" / "broken.mp4").write_bytes(np.random.default_rng(9).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return root


@pytest.fixture(scope="module")
def weights(synthetic_checkpoint, tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("weights")
    out = {}
    for stream, release in (("rgb", "rgb_imagenet"), ("flow", "flow_imagenet")):
        out[stream] = folder / f"{release}.safetensors"
        convert_to_file(synthetic_checkpoint(release), out[stream])
    return out


def centre(frames: np.ndarray, size: int) -> np.ndarray:
    """The centre ``size`` x ``size`` crop of ``[..., H, W, C]`` (offsets floored, as the decoder's)."""
    top, left = (frames.shape[-3] - size) // 2, (frames.shape[-2] - size) // 2
    return frames[..., top: top + size, left: left + size, :]


def run_job(source: Path, outdir: Path, weights: dict, settings: FeatureSettings = SETTINGS, **kw):
    job = FeatureJob(source, outdir, settings, rgb_weights=str(weights["rgb"]), flow_weights=str(weights["flow"]),
                     device="cpu", **kw)
    return run_feature_job(job)


def manifest_entries(outdir: Path) -> dict:
    lines = (outdir / "manifest.jsonl").read_text().splitlines()
    return {e["video"]: e for e in map(json.loads, lines)}


def outputs(outdir: Path) -> dict:
    return {p.relative_to(outdir).as_posix(): p.read_bytes() for p in sorted(outdir.rglob("*.npy"))}


@pytest.fixture(scope="module")
def first_run(video_folder, weights, tmp_path_factory):
    outdir = tmp_path_factory.mktemp("out") / "features"
    summary = run_job(video_folder, outdir, weights)
    return outdir, summary


def test_folder_is_listed_recursively_in_name_order(video_folder):
    names = [s.relative for s in list_sources(video_folder)]
    assert names == sorted(list(GOOD_VIDEOS) + ["a/broken.mp4"])


def test_manifests_txt_and_csv_name_the_same_videos(video_folder, tmp_path):
    (tmp_path / "list.txt").write_text("".join(f"{video_folder / n}\n" for n in GOOD_VIDEOS))
    (tmp_path / "list.csv").write_text("label,path\n" + "".join(f"x,{video_folder / n}\n" for n in GOOD_VIDEOS))
    txt, csv = list_sources(tmp_path / "list.txt"), list_sources(tmp_path / "list.csv")
    assert [s.path for s in txt] == [s.path for s in csv]
    assert sorted(str(s.path) for s in txt) == sorted(str(video_folder / n) for n in GOOD_VIDEOS)


def test_per_video_outputs_equal_extract_features_on_the_same_decoded_clip(first_run, video_folder, weights):
    outdir, summary = first_run
    model = i3d("rgb_imagenet", weights=weights["rgb"], final_endpoint="Mixed_5c")
    for name in GOOD_VIDEOS:
        clip = rgb_input(decode(video_folder / name, DECODE))
        expected = extract_features(model, clip, endpoint="pool", window=16, stride=8, batch_size=2).features
        got = np.load(outdir / f"{name}.npy")
        assert got.shape == expected.shape and got.shape[1] == 1024
        assert difference(got, expected).rel_l2 <= 1e-6, name


def test_corrupt_file_is_reported_and_the_others_are_done(first_run):
    outdir, summary = first_run
    entries = manifest_entries(outdir)
    assert (summary.computed, summary.failed, summary.videos) == (len(GOOD_VIDEOS), 1, len(GOOD_VIDEOS) + 1)
    assert entries["a/broken.mp4"]["status"] == "failed"
    error = entries["a/broken.mp4"]["error"]  # the problem; the entry names the video (video, source)
    assert error.startswith("not a video or corrupt") and "broken.mp4" not in error and "\n" not in error
    assert not (outdir / "a" / "broken.mp4.npy").exists()
    for name in GOOD_VIDEOS:
        entry = entries[name]
        assert entry["status"] == "done" and entry["output"] == f"{name}.npy"
        assert entry["size"] == (Path(entry["source"])).stat().st_size
        assert len(entry["weights"]["rgb"]) == 64 and entry["endpoint"] == "pool" and entry["fps"] == 25
        assert entry["windows"] == np.load(outdir / entry["output"]).shape[0]


def test_rerun_skips_up_to_date_videos_and_recomputes_changed_ones(first_run, video_folder, weights, tmp_path):
    outdir, _ = first_run
    copy = tmp_path / "features"
    shutil.copytree(outdir, copy)
    again = run_job(video_folder, copy, weights)
    assert (again.computed, again.skipped, again.failed) == (0, len(GOOD_VIDEOS), 1)
    other = FeatureSettings(stream="rgb", endpoint="pool", window=16, stride=16, batch_size=2, decode=DECODE)
    changed = run_job(video_folder, copy, weights, settings=other)
    assert changed.computed == len(GOOD_VIDEOS)
    assert manifest_entries(copy)["clip3.gif"]["settings"]["stride"] == 16


def test_two_streams_write_rgb_flow_and_joint_logits(video_folder, weights, tmp_path):
    from safetensors.numpy import load_file

    settings = FeatureSettings(stream="both", endpoint="Logits", window=9, stride=9, batch_size=2,
                               decode=DecodeOptions(fps=25, resize_shorter=240, crop=224, max_frames=10))
    run_job(video_folder / "a" / "clip1.mp4", tmp_path / "out", weights, settings=settings)
    arrays = load_file(str(tmp_path / "out" / "clip1.mp4.safetensors"))
    assert set(arrays) == {"rgb", "flow", "joint"} and arrays["rgb"].shape == (1, 400)
    np.testing.assert_array_equal(arrays["joint"], arrays["rgb"] + arrays["flow"])
    frames = decode(video_folder / "a" / "clip1.mp4", settings.decode)
    resized = decode(video_folder / "a" / "clip1.mp4", DecodeOptions(fps=25, resize_shorter=240, crop=None,
                                                                       max_frames=10))
    assert np.array_equal(centre(resized, 224), frames)
    flow = centre(flow_input(resized, settings.flow), 224)  # README order: TV-L1 on the resized frame, then crop
    assert flow.shape == (9, 224, 224, 2) and -1 <= flow.min() and flow.max() <= 1
    model = i3d("flow_imagenet", weights=weights["flow"])
    expected = extract_features(model, flow, endpoint="Logits", window=9, stride=9).features
    assert difference(arrays["flow"], expected).rel_l2 <= 1e-6
    rgb_model = i3d("rgb_imagenet", weights=weights["rgb"])
    rgb_expected = extract_features(rgb_model, rgb_input(frames[:9]), endpoint="Logits", window=9, stride=9).features
    assert difference(arrays["rgb"], rgb_expected).rel_l2 <= 1e-6  # RGB frames 0..8: the 9 flows' first frames


def test_a_clip_shorter_than_the_window_is_a_failure_naming_both_lengths(video_folder, weights, tmp_path):
    settings = FeatureSettings(stream="rgb", endpoint="pool", window=500, batch_size=1, decode=DECODE)
    summary = run_job(video_folder / "clip3.gif", tmp_path / "out", weights, settings=settings)
    (video, error), = summary.failures
    assert "28 frames" in error and "window of 500" in error and "at most 28" in error


def _cli(*args: str, env=None, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "i3d_convert.cli.app", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, **kw)


def _cli_args(video_folder: Path, outdir: Path, weights: dict):
    return ["features", str(video_folder), "-o", str(outdir), "--weights", str(weights["rgb"]), "--device", "cpu",
            "--quiet", *CLI_SETTINGS]


def test_cli_run_with_a_decoding_worker_exits_1_names_the_failed_video_and_equals_the_library(
        first_run, video_folder, weights, tmp_path):
    proc = _cli(*_cli_args(video_folder, tmp_path / "out", weights), "--workers", "1")
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 1, err
    assert "a/broken.mp4" in err and "Traceback" not in err
    assert outputs(tmp_path / "out") == outputs(first_run[0])


def test_a_run_killed_half_way_resumes_to_the_same_outputs(video_folder, weights, tmp_path):
    """Full-size crops here, so that each video takes long enough for the kill to land between videos."""
    big = ["--resize", "256", "--crop", "224"]
    reference = tmp_path / "reference"
    run_job(video_folder, reference, weights, settings=FeatureSettings(
        stream="rgb", endpoint="pool", window=16, stride=8, batch_size=2, decode=DecodeOptions(fps=25)))
    outdir = tmp_path / "out"
    proc = _cli(*_cli_args(video_folder, outdir, weights), *big)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not list(outdir.rglob("*.npy")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    assert proc.returncode != 0
    done_before = set(outputs(outdir))
    assert 0 < len(done_before) < len(GOOD_VIDEOS), "the kill should land half-way"
    assert not [p for p in outdir.rglob("*") if p.name.endswith(".i3d-tmp")]
    resumed = run_job(video_folder, outdir, weights, settings=FeatureSettings(
        stream="rgb", endpoint="pool", window=16, stride=8, batch_size=2, decode=DecodeOptions(fps=25)))
    assert resumed.computed == len(GOOD_VIDEOS) - len(done_before)
    assert outputs(outdir) == outputs(reference)


def test_torchrun_two_ranks_equal_one_process_bit_for_bit(first_run, video_folder, weights, tmp_path):
    script = Path(sys.executable).parent / "i3d-convert"
    if not script.exists():
        pytest.fail(f"{script} is missing: install the package (pip install -e .) so torchrun can run it")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
            "--no-python", str(script), *_cli_args(video_folder, tmp_path / "out", weights)]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode != 0  # the corrupt video fails the run on its rank
    assert outputs(tmp_path / "out") == outputs(first_run[0])
    two, one = manifest_entries(tmp_path / "out"), manifest_entries(first_run[0])
    assert set(two) == set(one)
    assert {k: v["status"] for k, v in two.items()} == {k: v["status"] for k, v in one.items()}


def test_cli_flow_stream_with_its_weights_workers_and_fail_fast(video_folder, weights, tmp_path):
    """``--stream flow --flow-weights`` writes flow features; ``--fail-fast`` stops at the broken video;
    ``--no-fail-fast`` (the default) goes on; ``--workers 0`` decodes in the main process."""
    common = ["--resize", "40", "--crop", "32", "--window", "9", "--stride", "9", "--device", "cpu", "--quiet",
              "--stream", "flow", "--flow-weights", str(weights["flow"]), "--workers", "0", "--fps", "25"]
    proc = _cli("features", str(video_folder / "a"), "-o", str(tmp_path / "fast"), *common, "--fail-fast")
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 1 and "broken.mp4" in err and "Traceback" not in err
    assert not (tmp_path / "fast" / "clip1.mp4.npy").exists()  # broken.mp4 sorts first: stopped there
    proc = _cli("features", str(video_folder / "a"), "-o", str(tmp_path / "all"), *common, "--no-fail-fast")
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 1, err
    flow = np.load(tmp_path / "all" / "clip1.mp4.npy")
    model = i3d("flow_imagenet", weights=weights["flow"], final_endpoint="Mixed_5c")
    frames = decode(video_folder / "a" / "clip1.mp4", DecodeOptions(fps=25, resize_shorter=40, crop=None))
    field = centre(flow_input(frames, SETTINGS.flow), 32)  # the default order: TV-L1 on the resized frame, then crop
    expected = extract_features(model, field, window=9, stride=9).features
    assert difference(flow, expected).rel_l2 <= 1e-6


def test_cli_single_video_refuses_an_existing_output_with_no_overwrite(video_folder, weights, tmp_path):
    existing = tmp_path / "feats.npy"
    existing.write_bytes(b"keep")
    proc = _cli("features", str(video_folder / "clip3.gif"), "-o", str(existing), "--weights", str(weights["rgb"]),
                "--window", "16", "--no-overwrite", "--resize", "72", "--crop", "64")
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 1 and "--overwrite" in err and existing.read_bytes() == b"keep"


def test_compiled_max_pools_give_the_same_output_files_bit_for_bit(first_run, video_folder, weights, tmp_path):
    outdir, _ = first_run
    summary = run_job(video_folder, tmp_path / "compiled", weights, compile_pools=True)
    assert summary.computed == len(GOOD_VIDEOS)
    assert outputs(tmp_path / "compiled") == outputs(outdir)


def test_cli_compile_pools_reaches_the_stream_model(video_folder, weights, tmp_path, monkeypatch, capsys):
    from conftest import cli_runner

    from i3d_convert.cli.app import main
    from i3d_convert.models.i3d import InceptionI3d

    compiled = []
    monkeypatch.setattr(InceptionI3d, "compile_max_pools", lambda self, enabled=True: compiled.append(enabled) or 13)
    code, _, err = cli_runner(main, capsys)(*_cli_args(video_folder, tmp_path / "out", weights), "--workers", "0",
                                            "--compile-pools")
    assert code == 1 and "broken.mp4" in err  # the corrupt video fails as in every run; the others are done
    assert compiled == [True]
    code, _, err = cli_runner(main, capsys)(*_cli_args(video_folder, tmp_path / "plain", weights), "--workers", "0")
    assert compiled == [True]  # not without the flag
