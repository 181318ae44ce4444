"""Streaming features: window by window from the decoder, bit-identical to the whole-video path.

The oracle is the whole-video path built from library pieces that do not stream: ``decode`` (every
frame in memory), ``video_inputs`` (RGB crops and flow over the whole clip, in the settings' flow
order) and ``extract_features`` over each crop.
Tiny frames (resize 40, crop 32) keep TV-L1 and the network fast on 2 cores.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from i3d_convert.conversion.tf_to_torch import convert_to_file
from i3d_convert.dataset import partial as partial_module
from i3d_convert.dataset import runner as runner_module
from i3d_convert.dataset.features import extract_features
from i3d_convert.dataset.crops import crop_count, mirrored
from i3d_convert.dataset.recipe import FeatureSettings, rgb_input, stride_for_rate, video_inputs
from i3d_convert.dataset.runner import FeatureJob, run_feature_job
from i3d_convert.dataset.streaming import VideoWindows
from i3d_convert.errors import I3DConvertError
from i3d_convert.io.video_decode import DecodeOptions, decode
from i3d_convert.io.video_write import write_test_video
from i3d_convert.weights.factory import i3d

DECODE = DecodeOptions(fps=25, resize_shorter=40, crop=32)


def sliding_frames(count: int, height: int = 40, width: int = 60, seed: int = 0) -> np.ndarray:
    """Smooth random texture sliding right 1 px a frame."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (height, width + count, 3)).astype(np.float32)
    for axis in (0, 1):  # a little smoothing, so TV-L1 finds the motion
        base = (base + np.roll(base, 1, axis) + np.roll(base, -1, axis)) / 3
    base = base.round().astype(np.uint8)
    return np.stack([base[:, count - t: count - t + width] for t in range(count)])


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("stream") / "videos" / "slide.mkv"
    path.parent.mkdir()
    write_test_video(path, sliding_frames(22), fps=25)
    return path


@pytest.fixture(scope="module")
def weights(synthetic_checkpoint, tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("weights")
    out = {}
    for stream in ("rgb", "flow"):
        out[stream] = folder / f"{stream}.safetensors"
        convert_to_file(synthetic_checkpoint(f"{stream}_imagenet"), out[stream])
    return out


def run(source: Path, outdir: Path, weights: dict, settings: FeatureSettings, **kw):
    job = FeatureJob(source, outdir, settings, rgb_weights=str(weights["rgb"]), flow_weights=str(weights["flow"]),
                     device="cpu", workers=0, **kw)
    return run_feature_job(job)


def metadata(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), "np") as f:
        return f.metadata()


def whole_video(path: Path, weights: dict, settings: FeatureSettings) -> dict:
    """``{stream: [windows, D]}`` (centre) or ``[windows, crops, D]``; crops 5..9 mirror crops 0..4."""
    inputs = video_inputs(decode(path, settings.frame_options()), settings)
    out = {}
    for stream in settings.streams:
        model = i3d(f"{stream}_imagenet", weights=weights[stream], final_endpoint="Mixed_5c")
        rows = []
        for crop in range(crop_count(settings.crops)):
            clip = inputs[stream][crop % 5]
            if crop >= 5:
                clip = mirrored(clip, flow=stream == "flow")
            clip = rgb_input(clip) if stream == "rgb" else clip
            rows.append(extract_features(model, clip, endpoint=settings.endpoint, window=settings.window,
                                         stride=settings.stride, batch_size=settings.batch_size).features)
        out[stream] = rows[0] if settings.crops == "center" else np.stack(rows, axis=1)
    return out


@pytest.mark.parametrize("window,stride,batch,region", [(9, 4, 2, "resized"), (8, 11, 3, "resized"), (9, 4, 2, "crop")])
def test_streamed_two_streams_equal_the_whole_video_path_bit_for_bit(video, weights, tmp_path, window, stride, batch,
                                                                      region):
    """Overlapping windows (stride < window: frames and flow fields reused) and gaps (stride > window:
    frames skipped, fields never computed), batches that do not divide the windows; both flow orders."""
    settings = FeatureSettings(stream="both", window=window, stride=stride, batch_size=batch, decode=DECODE,
                               flow_region=region)
    run(video, tmp_path / "out", weights, settings)
    got = load_file(str(tmp_path / "out" / "slide.mkv.safetensors"))
    expected = whole_video(video, weights, settings)
    for stream in ("rgb", "flow"):
        assert got[stream].shape == expected[stream].shape and got[stream].shape[0] >= 2
        assert np.array_equal(got[stream], expected[stream]), stream


def test_rgb_stream_alone_uses_every_frame_equals_the_whole_video_path_and_reports_each_batch(
        video, weights, tmp_path):
    settings = FeatureSettings(stream="rgb", window=10, stride=10, batch_size=1, decode=DECODE)
    calls = []
    run(video, tmp_path / "out", weights, settings, progress=lambda *a: calls.append(a))
    got = np.load(tmp_path / "out" / "slide.mkv.npy")
    assert got.shape == (2, 1024)  # 22 frames: windows at 0, 10 (12..21 do not fill a window)
    assert np.array_equal(got, whole_video(video, weights, settings)["rgb"])
    assert calls == [(0, 1, 1, "slide.mkv"), (0, 1, 1, "slide.mkv"), (1, 1, 0, "slide.mkv")]  # per batch, then done


def test_the_buffer_holds_at_most_one_window_and_one_frame_whatever_the_length(tmp_path):
    path = tmp_path / "long.mkv"
    write_test_video(path, sliding_frames(120, 40, 40), fps=25)
    settings = FeatureSettings(stream="both", window=6, stride=2, batch_size=1,
                               decode=DecodeOptions(fps=25, resize_shorter=None, crop=8))
    windows = VideoWindows(path, settings)
    stored = []
    for batch in windows:
        stored.append((len(windows._frames), len(windows._fields)))
        assert batch.inputs["flow"].shape == (1, 1, 6, 8, 8, 2)
    assert len(stored) == (120 - 1 - 6) // 2 + 1 and windows.frames == 120
    assert max(f for f, _ in stored) <= 6 + 1 and max(g for _, g in stored) <= 6


def test_a_video_shorter_than_the_window_fails_naming_both_lengths(video):
    settings = FeatureSettings(stream="flow", window=40, decode=DECODE)
    with pytest.raises(I3DConvertError, match="22 frames after decoding, 21 usable .* window of 40; use a window of at most 21"):
        list(VideoWindows(video, settings))


def test_a_run_stopped_mid_video_resumes_from_its_checkpoint_to_the_same_bits(video, weights, tmp_path, monkeypatch):
    settings = FeatureSettings(stream="both", window=6, stride=7, batch_size=1, decode=DECODE)
    run(video, tmp_path / "reference", weights, settings)
    saves = []
    real_save = partial_module.PartialFeatures.save

    def save_then_die(self, first, arrays):
        real_save(self, first, arrays)
        saves.append(first)
        if len(saves) == 2:
            raise KeyboardInterrupt  # a kill between two batches

    monkeypatch.setattr(partial_module.PartialFeatures, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        run(video, tmp_path / "out", weights, settings, checkpoint_seconds=0)
    assert saves == [0, 1] and not (tmp_path / "out" / "slide.mkv.safetensors").exists()
    assert sorted(p.name for p in (tmp_path / "out" / ".partial" / "slide.mkv").glob("*.npz")) == [
        "w000000000-000000001.npz", "w000000001-000000002.npz"]
    monkeypatch.setattr(partial_module.PartialFeatures, "save", real_save)
    starts = []
    real_init = runner_module.VideoWindows.__init__

    def spy(self, path, settings, first_window=0):
        starts.append(first_window)
        real_init(self, path, settings, first_window)

    monkeypatch.setattr(runner_module.VideoWindows, "__init__", spy)
    summary = run(video, tmp_path / "out", weights, settings, checkpoint_seconds=0)
    assert summary.computed == 1 and starts == [2]  # resumed after the 2 checkpointed windows of 3
    name = "slide.mkv.safetensors"
    resumed, reference = load_file(str(tmp_path / "out" / name)), load_file(str(tmp_path / "reference" / name))
    assert set(resumed) == set(reference) == {"rgb", "flow"}
    assert all(np.array_equal(resumed[k], reference[k]) for k in reference)  # bit for bit
    # (not the file's bytes: safetensors writes its metadata keys in a per-process hash order)
    assert metadata(tmp_path / "out" / name) == metadata(tmp_path / "reference" / name)
    assert not (tmp_path / "out" / ".partial").exists()


def test_a_checkpoint_of_other_settings_is_discarded(video, weights, tmp_path):
    settings = FeatureSettings(stream="rgb", window=10, stride=10, batch_size=2, decode=DECODE)
    stale = partial_module.PartialFeatures(tmp_path / "out", "slide.mkv", {"settings_key": "other"})
    stale.save(0, {"rgb": np.zeros((2, 1024), np.float32)})
    run(video, tmp_path / "out", weights, settings)
    run(video, tmp_path / "reference", weights, settings)
    assert (tmp_path / "out" / "slide.mkv.npy").read_bytes() == (tmp_path / "reference" / "slide.mkv.npy").read_bytes()


@pytest.mark.parametrize("fps,rate,stride", [(25, 25 / 16, 16), (30, 7.5, 4), (25, 25, 1)])
def test_a_feature_rate_is_a_whole_stride_in_frames(fps, rate, stride):
    assert stride_for_rate(fps, rate) == stride


@pytest.mark.parametrize("fps,rate,message", [(25, 2, "stride of 12.5 frames"), (None, 2, "--fps native"),
                                              (25, 50, "stride of 0.5")])
def test_a_feature_rate_that_is_no_whole_stride_is_refused(fps, rate, message):
    with pytest.raises(I3DConvertError, match=message):
        stride_for_rate(fps, rate)


def test_cli_crops_feature_rate_and_checkpoints_on_a_folder_and_on_one_video(video, weights, tmp_path, capsys):
    from conftest import cli_runner

    from i3d_convert.cli.app import main

    common = ["--weights", str(weights["rgb"]), "--device", "cpu", "--quiet", "--resize", "40", "--crop", "32",
              "--window", "8", "--batch-size", "2", "--crops", "five", "--feature-rate", "2.5"]  # 25 fps / 2.5 = 10
    code, _, err = cli_runner(main, capsys)("features", str(video.parent), "-o", str(tmp_path / "dir"), *common,
                                            "--workers", "0", "--checkpoint-seconds", "0")
    assert code == 0, err
    folder = np.load(tmp_path / "dir" / "slide.mkv.npy")
    assert folder.shape == (2, 5, 1024)  # 22 frames: windows at 0 and 10
    code, _, err = cli_runner(main, capsys)("features", str(video), "-o", str(tmp_path / "one.npy"), *common)
    assert code == 0, err
    assert np.array_equal(np.load(tmp_path / "one.npy"), folder)


@pytest.mark.parametrize("extra,message", [(["--fps", "native"], "--fps native"),
                                           (["--stride", "4"], "--stride or --feature-rate, not both")])
def test_cli_refuses_a_feature_rate_it_cannot_honour_in_one_line(video, tmp_path, capsys, extra, message):
    from conftest import cli_runner

    from i3d_convert.cli.app import main

    code, _, err = cli_runner(main, capsys)("features", str(video), "-o", str(tmp_path / "f.npy"),
                                            "--feature-rate", "2", *extra)
    assert code == 1 and message in err and len(err.strip().splitlines()) == 1, err


def test_frames_no_window_wants_are_decoded_but_not_converted(video):
    from i3d_convert.io.video_decode import iter_frames

    every = decode(video, DECODE)
    sparse = list(iter_frames(video, DECODE, wanted=lambda t: t % 5 == 0))
    assert len(sparse) == len(every) == 22
    assert all((frame is None) == (t % 5 != 0) for t, frame in enumerate(sparse))
    assert all(np.array_equal(sparse[t], every[t]) for t in range(0, 22, 5))
