"""Five and ten crops: torchvision's geometry, crop 0 = the centre run, mirrors, flow's x sign."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from i3d_convert.dataset.crops import TORCHVISION_TEN_CROP_ORDER, crop_offsets, cut_crops, mirrored
from i3d_convert.dataset.recipe import FeatureSettings
from i3d_convert.dataset.runner import FeatureJob, run_feature_job
from i3d_convert.dataset.streaming import VideoWindows, crop_inputs
from i3d_convert.errors import I3DConvertError
from i3d_convert.io.video_decode import DecodeOptions
from i3d_convert.io.video_write import write_test_video
from test_streaming import weights  # noqa: F401  (the converted synthetic weights fixture)

#: Frames are written at their final size (no resize): 40 x 52, crops of 32.
DECODE = DecodeOptions(fps=25, resize_shorter=None, crop=32)


def moving_right(count: int, symmetric: bool) -> np.ndarray:
    """40x52 frames; ``symmetric``: each row mirror-symmetric (a still pattern), else texture moving right 1 px/frame."""
    rng = np.random.default_rng(3)
    base = rng.integers(0, 256, (40, 52 + count, 3)).astype(np.float32)
    for axis in (0, 1):
        base = (base + np.roll(base, 1, axis) + np.roll(base, -1, axis)) / 3
    base = base.round().astype(np.uint8)
    frames = np.stack([base[:, count - t: count - t + 52] for t in range(count)])
    if symmetric:
        frames[:, :, 26:] = frames[:, :, :26][:, :, ::-1]
    return frames


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("crops")
    out = {}
    for name, symmetric in (("moving.mkv", False), ("mirror.mkv", True)):
        out[name] = root / name.split(".")[0] / name
        out[name].parent.mkdir()
        write_test_video(out[name], moving_right(10, symmetric), fps=25)  # lossless: bit-exact frames
    return out


def features(video: Path, weights: dict, outdir: Path, crops: str, stream: str = "both") -> dict:
    """``{stream: features}`` of a ``features`` run over ``video`` (one 8-frame window)."""
    from safetensors.numpy import load_file

    settings = FeatureSettings(stream=stream, window=8, stride=8, batch_size=1, decode=DECODE, crops=crops)
    run_feature_job(FeatureJob(video, outdir, settings, rgb_weights=str(weights["rgb"]),
                               flow_weights=str(weights["flow"]), device="cpu", workers=0))
    if stream != "both":
        return {stream: np.load(outdir / f"{video.name}.npy")}
    return load_file(str(outdir / f"{video.name}.safetensors"))


def test_the_ten_crops_are_torchvisions_ten_crop_in_this_order():
    import torchvision.transforms.functional as tvf

    frame = np.random.default_rng(0).integers(0, 256, (256, 340, 3), dtype=np.uint8)
    ours = np.concatenate([cut_crops(frame, 224, 5), mirrored(cut_crops(frame, 224, 5), flow=False)])
    theirs = tvf.ten_crop(torch.from_numpy(frame).permute(2, 0, 1), [224, 224])
    for index, crop in zip(TORCHVISION_TEN_CROP_ORDER, theirs):
        assert np.array_equal(ours[index], crop.permute(1, 2, 0).numpy()), index


def test_the_centre_offset_floors_where_torchvision_rounds_half_to_even():
    assert crop_offsets(256, 455, 224)[0] == (16, 115)  # torchvision: round(115.5) = 116
    assert crop_offsets(256, 341, 224)[0] == (16, 58)  # torchvision: round(58.5) = 58, the same
    with pytest.raises(I3DConvertError, match="crop 64 is larger than the resized frame 52x40"):
        crop_offsets(40, 52, 64)


def test_crop_zero_of_ten_crops_equals_the_centre_crop_run_bit_for_bit(videos, weights, tmp_path):
    ten = features(videos["moving.mkv"], weights, tmp_path / "ten", "ten")
    centre = features(videos["moving.mkv"], weights, tmp_path / "centre", "center")
    for stream in ("rgb", "flow"):
        assert ten[stream].shape == (1, 10, 1024) and centre[stream].shape == (1, 1024)
        assert np.array_equal(ten[stream][:, 0], centre[stream]), stream
        assert not np.array_equal(ten[stream][:, 1], ten[stream][:, 0])  # the corners see other pixels


def test_mirrored_crops_of_a_mirror_symmetric_video_equal_the_unmirrored_ones(videos, weights, tmp_path):
    rgb = features(videos["mirror.mkv"], weights, tmp_path / "out", "ten", stream="rgb")["rgb"]
    assert rgb.shape == (1, 10, 1024)
    for mirror, same in ((5, 0), (6, 2), (7, 1), (8, 4), (9, 3)):  # mirror(top-left) = top-right, ...
        assert np.array_equal(rgb[:, mirror], rgb[:, same]), mirror
    assert not np.array_equal(rgb[:, 1], rgb[:, 2])


def test_flow_x_is_positive_for_rightward_motion_and_negated_in_the_mirrors(videos):
    settings = FeatureSettings(stream="flow", window=8, stride=8, batch_size=1, decode=DECODE, crops="ten")
    (batch,) = list(VideoWindows(videos["moving.mkv"], settings))
    centre, mirror = crop_inputs(batch, "flow", 0), crop_inputs(batch, "flow", 5)
    inner = (slice(None), slice(None), slice(6, -6), slice(6, -6))  # away from the borders TV-L1 cannot see past
    assert centre[inner + (0,)].mean() == pytest.approx(1 / 20, abs=0.01)  # 1 px a frame, /20
    assert abs(centre[inner + (1,)].mean()) < 0.01
    np.testing.assert_array_equal(mirror[..., 0], -centre[..., ::-1, 0])
    np.testing.assert_array_equal(mirror[..., 1], centre[..., ::-1, 1])
    # TV-L1 run on the mirrored frames agrees with the mirrored field (the convention is the motion's)
    from i3d_convert.flow.tvl1 import TVL1Params, flow_to_input, tvl1_flow
    from i3d_convert.io.video_decode import decode

    frames = np.stack([cut_crops(f, 32, 1)[0] for f in decode(videos["moving.mkv"], DecodeOptions(
        fps=25, resize_shorter=None, crop=None))])
    direct = flow_to_input(tvl1_flow(np.ascontiguousarray(frames[:9, :, ::-1]), TVL1Params()))[:8]
    assert direct[inner[1:] + (0,)].mean() == pytest.approx(-1 / 20, abs=0.01)
    # end-point error in pixels, mirrored field vs TV-L1 of the mirrored frames: measured mean 0.0097, max 0.078
    error = np.linalg.norm((direct - mirror[0])[inner[1:]] * 20, axis=-1)
    assert error.mean() < 0.05 and error.max() < 0.3


def test_crops_on_a_npy_clip_array_are_refused_in_one_line(tmp_path, capsys):
    from conftest import cli_runner

    from i3d_convert.cli.app import main

    clip = tmp_path / "clip.npy"
    np.save(clip, np.zeros((8, 32, 32, 3), np.float32))
    code, _, err = cli_runner(main, capsys)("features", str(clip), "-o", str(tmp_path / "f.npy"), "--window", "8",
                                            "--crops", "ten")
    assert code == 1 and "--crops applies to videos" in err and "clip.npy" in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "f.npy").exists()


def test_five_crops_without_a_crop_size_are_refused():
    with pytest.raises(I3DConvertError, match="five crops need a crop size"):
        FeatureSettings(crops="five", decode=DecodeOptions(crop=None))
