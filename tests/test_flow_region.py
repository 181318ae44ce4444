"""Flow's order (issue 21): TV-L1 on the whole resized frame then cropped (kinetics-i3d's README), or per crop;
and the MediaPipe Kinetics recipe's frames and flow storage against independent references (cv2 directly)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from safetensors.numpy import load_file

from i3d_convert.dataset.mediapipe import flow_to_image, image_to_flow, jpeg_round_trip
from i3d_convert.dataset.recipe import FeatureSettings, recipe_settings, video_inputs
from i3d_convert.dataset.streaming import VideoWindows, crop_inputs
from i3d_convert.errors import I3DConvertError
from i3d_convert.flow.tvl1 import portable_opencv
from i3d_convert.io.video_decode import DecodeOptions, decode
from i3d_convert.io.video_write import write_test_video
from conftest import key_without_code_path
from test_streaming import DECODE, run, sliding_frames, video, weights, whole_video  # noqa: F401  (fixtures)

needs_tvl1 = pytest.mark.skipif(not hasattr(cv2, "optflow"), reason="needs opencv-contrib's TV-L1")


def opencv_flow_input(frames: np.ndarray) -> np.ndarray:
    """The reference: cv2's own gray conversion and DualTVL1 (OpenCV defaults) on OpenCV's portable
    code path (as the package runs it), ``clip(-20, 20) / 20``."""
    gray = [cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY) for f in frames]
    algo = cv2.optflow.DualTVL1OpticalFlow_create()
    with portable_opencv():
        fields = [algo.calc(a, b, None) for a, b in zip(gray[:-1], gray[1:])]
    return np.clip(np.stack(fields), -20, 20) / np.float32(20)


# --------------------------------------------------------------------------- the setting and its key

#: Keys computed by the package before flow_region existed (commit f8693cc, crop-first flow).
OLD_KEYS = {("both", "center"): "96e4a29cf28e7f0696942722f13dfcb41a04b47c04abcf03b84078d229211c96",
            ("flow", "ten"): "e8efe428258ea923eb83f841a80290bf183a30b115681da4dc7e3e582f7149fa",
            ("rgb", "center"): "60c894adb43d98c5ae5e25df6ff3dae75fd63e76b4bbbe18cad792bc2047ab8b"}


def test_crop_first_flow_keeps_the_keys_outputs_were_made_with_and_the_default_order_changes_them():
    for (stream, crops), key in OLD_KEYS.items():
        assert key_without_code_path(FeatureSettings(stream=stream, crops=crops, flow_region="crop")) == key
    assert FeatureSettings(stream="rgb").key() == OLD_KEYS[("rgb", "center")]  # RGB has no flow order
    for stream, crops in (("both", "center"), ("flow", "ten")):
        default = FeatureSettings(stream=stream, crops=crops)
        assert default.flow_region == "resized" and default.describe()["flow_region"] == "resized"
        assert default.key() != OLD_KEYS[(stream, crops)]


@pytest.mark.parametrize("decode", [DecodeOptions(crop=None), DecodeOptions(resize_mode="none"),
                                    DecodeOptions(resize_mode="mediapipe", crop=None)])
def test_without_a_crop_both_orders_are_one_setting_with_one_key(decode):
    resized, crop = (FeatureSettings(stream="both", decode=decode, flow_region=r) for r in ("resized", "crop"))
    assert resized.key() == crop.key() and "flow_region" not in resized.describe()
    assert resized.frame_options() == decode  # nothing is cut after decoding


def test_an_unknown_flow_region_or_recipe_is_refused_in_one_line():
    with pytest.raises(I3DConvertError, match="flow region must be one of resized, crop, got 'full'"):
        FeatureSettings(flow_region="full")
    with pytest.raises(I3DConvertError, match="recipe must be one of deepmind, mediapipe"):
        recipe_settings("tfhub")
    with pytest.raises(I3DConvertError, match="mediapipe recipe computes flow on the whole scaled frame"):
        recipe_settings("mediapipe", stream="flow", flow_region="crop")


# --------------------------------------------------------------------------- the resized order


@needs_tvl1
def test_resized_order_crops_are_tvl1_on_the_whole_resized_frame_cut_with_the_rgb_boxes(video):
    settings = FeatureSettings(stream="both", window=8, stride=8, batch_size=1, decode=DECODE, crops="ten")
    batch = next(iter(VideoWindows(video, settings)))
    full = decode(video, DecodeOptions(fps=25, resize_shorter=40, crop=None))[:9]  # 40x60
    assert full.shape[1:3] == (40, 60)
    flow = opencv_flow_input(full)
    boxes = [(4, 14), (0, 0), (0, 28), (8, 0), (8, 28)]  # centre, tl, tr, bl, br of 32x32 in 40x60
    for crop, (top, left) in enumerate(boxes):
        box = (slice(None), slice(top, top + 32), slice(left, left + 32))
        np.testing.assert_array_equal(crop_inputs(batch, "flow", crop)[0], flow[box])
        np.testing.assert_array_equal(batch.inputs["rgb"][crop, 0], full[:8][box])
        mirror = crop_inputs(batch, "flow", crop + 5)[0]
        np.testing.assert_array_equal(mirror[..., 0], -flow[box][:, :, ::-1, 0])
        np.testing.assert_array_equal(mirror[..., 1], flow[box][:, :, ::-1, 1])
    # the centre crop is the decoder's centre crop bit for bit
    np.testing.assert_array_equal(batch.inputs["rgb"][0, 0], decode(video, DECODE)[:8])
    # and the crop-first order is not the same field: it differs at the crop's border
    crop_first = opencv_flow_input(decode(video, DECODE)[:9])
    assert not np.array_equal(crop_first, crop_inputs(batch, "flow", 0)[0])


def test_streamed_ten_crops_in_the_resized_order_equal_the_whole_video_path_bit_for_bit(video, weights, tmp_path):
    settings = FeatureSettings(stream="both", window=8, stride=6, batch_size=2, decode=DECODE, crops="ten")
    run(video, tmp_path / "out", weights, settings)
    got = load_file(str(tmp_path / "out" / "slide.mkv.safetensors"))
    expected = whole_video(video, weights, settings)
    for stream in ("rgb", "flow"):
        assert got[stream].shape == expected[stream].shape == (3, 10, 1024)
        assert np.array_equal(got[stream], expected[stream]), stream


def test_resized_order_buffers_whole_frames_bounded_by_the_window(tmp_path):
    path = tmp_path / "long.mkv"
    write_test_video(path, sliding_frames(60, 40, 48), fps=25)
    settings = FeatureSettings(stream="both", window=6, stride=2, batch_size=1,
                               decode=DecodeOptions(fps=25, resize_shorter=None, crop=32))
    windows = VideoWindows(path, settings)
    sizes = [(len(windows._frames), len(windows._fields), batch.inputs["flow"].shape,
              {f.shape for f in windows._frames.values()}) for batch in windows]
    assert len(sizes) == (60 - 1 - 6) // 2 + 1
    assert max(f for f, _, _, _ in sizes) <= 7 and max(g for _, g, _, _ in sizes) <= 6
    assert {s for _, _, s, _ in sizes} == {(1, 1, 6, 32, 32, 2)}
    assert set().union(*(s for *_, s in sizes)) == {(40, 48, 3)}  # whole frames; crops are cut per window


# --------------------------------------------------------------------------- the MediaPipe recipe


@pytest.mark.parametrize("height,width,box,size", [
    (90, 120, (0, 0, 120, 90), (84, 64)),  # 4:3: no aspect crop; width int(64 / 90 * 120) = 85 -> even 84
    (60, 150, (22, 0, 106, 60), (112, 64)),  # 2.5:1: 16:9 centre crop (106, even), enlarged
    (100, 40, (0, 15, 40, 70), (36, 64)),  # 1:2.5: 9:16 centre crop (70, even)
    (40, 100, (15, 0, 70, 40), (112, 64))])  # wider than 16:9 and enlarged
def test_mediapipe_frames_are_the_aspect_crop_then_cv2_resize_to_the_height(tmp_path, height, width, box, size):
    frames = sliding_frames(3, height, width, seed=5)
    path = tmp_path / "clip.mkv"
    write_test_video(path, frames, fps=25)  # lossless
    got = decode(path, DecodeOptions(fps=None, resize_mode="mediapipe", resize_shorter=64, crop=None))
    cropped = decode(path, DecodeOptions(fps=None, resize_mode="mediapipe", resize_shorter=64, crop=30))
    left, top, w, h = box
    for frame, out, centre in zip(frames, got, cropped):
        part = np.ascontiguousarray(frame[top: top + h, left: left + w])
        if w >= size[0] and h >= size[1]:
            expected = cv2.resize(part, size, interpolation=cv2.INTER_AREA)
        else:  # enlarged in 16-bit linear light (MediaPipe's RescaleSrgbImage), sRGB curve per value
            linear = [int(((v / 255 + 0.055) / 1.055) ** 2.4 * 65535 + 0.5) if v / 255 >= 0.04045
                      else int(v / 255 / 12.92 * 65535 + 0.5) for v in range(256)]
            big = cv2.resize(np.array(linear, np.uint16)[part], size, interpolation=cv2.INTER_CUBIC) / 65535.0
            expected = np.where(big < 0.0031308, big * 12.92, 1.055 * big ** (1 / 2.4) - 0.055) * 255 + 0.5
            expected = expected.astype(np.uint8)
        np.testing.assert_array_equal(out, expected)
        y0, x0 = (size[1] - 30) // 2, (size[0] - 30) // 2
        np.testing.assert_array_equal(centre, expected[y0: y0 + 30, x0: x0 + 30])


def test_mediapipe_area_shrink_by_two_is_the_mean_of_each_2x2_block():
    """INTER_AREA (the downscaler MediaPipe's open-source ImageResizer calls) on a 2:1 shrink, against numpy."""
    from i3d_convert.io.video_resize import mediapipe_scale

    frame = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    blocks = frame.reshape(32, 2, 32, 2, 3).astype(np.float64).mean(axis=(1, 3))
    assert np.abs(mediapipe_scale(frame, 32).astype(np.float64) - blocks).max() <= 0.5


def test_mediapipe_flow_images_quantise_like_flow_to_image_calculator_and_decode_like_its_reader():
    flow = np.array([[[-25.0, 25.0], [-20.0, 20.0], [0.0, 19.99], [0.2, -0.2]]], np.float32)
    image = flow_to_image(flow)
    # (v + 20) / 40 * 255 truncated: -20 -> 0, 0 -> 127 (127.5), 19.99 -> 254 (254.87), 0.2 -> 128 (128.775)
    assert image[..., 0].tolist() == [[0, 0, 127, 128]] and image[..., 1].tolist() == [[255, 255, 254, 126]]
    assert (image[..., 2] == 0).all()
    back = image_to_flow(image)  # (q / 255 - 0.5) * 40: no exact zero, steps of 40/255
    np.testing.assert_allclose(back[0, :, 0], [-20, -20, -20 / 255, 20 / 255], atol=1e-5)


def test_jpeg_quality_100_keeps_a_smooth_image_within_a_few_levels():
    yy, xx = np.mgrid[0:64, 0:64]
    image = np.stack([xx * 2, yy * 3, np.zeros_like(xx)], axis=-1).astype(np.uint8)
    back = jpeg_round_trip(image)
    assert back.shape == image.shape and back.dtype == np.uint8
    assert np.abs(back.astype(int) - image).max() <= 8 and not np.array_equal(back, image)


@needs_tvl1
def test_mediapipe_recipe_streams_like_its_whole_video_path_and_stores_whole_frames_and_flow_as_jpeg(video):
    settings = FeatureSettings(stream="both", window=8, stride=8, batch_size=1, recipe="mediapipe",
                               decode=DecodeOptions(fps=25, sampling="mediapipe", resize_mode="mediapipe",
                                                    resize_shorter=40, crop=32))
    batches = list(VideoWindows(video, settings))
    inputs = video_inputs(decode(video, settings.frame_options()), settings)
    assert len(batches) == 2
    for k, batch in enumerate(batches):
        for stream in ("rgb", "flow"):
            np.testing.assert_array_equal(batch.inputs[stream][:, 0], inputs[stream][:, 8 * k: 8 * k + 8])

    def jpeg(image):
        data = cv2.imencode(".jpg", np.ascontiguousarray(image[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 100])[1]
        return cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1]

    frames = decode(video, DecodeOptions(fps=25, sampling="mediapipe", resize_mode="none"))[:9]  # 40x60 already
    box = (slice(None), slice(4, 36), slice(14, 46))
    stored = np.stack([jpeg(flow_to_image(f)) for f in opencv_flow_input(frames) * 20])  # the whole field
    expected = np.clip((stored[..., :2] / 255.0 - 0.5) * 40, -20, 20) / 20
    np.testing.assert_allclose(batches[0].inputs["flow"][0, 0], expected[box], atol=1e-6)
    rgb = np.stack([jpeg(f) for f in frames[:8]])[box]  # the whole frame through JPEG, then the crop
    np.testing.assert_array_equal(batches[0].inputs["rgb"][0, 0], rgb)
    assert not np.array_equal(rgb, frames[:8][box])


def test_cli_recipe_and_flow_region_reach_the_settings_and_bad_values_fail_in_one_line(video, weights, tmp_path, cli,
                                                                                        monkeypatch):
    from i3d_convert.dataset import runner as runner_module

    seen = []

    def record(job):
        seen.append(job.settings)
        raise I3DConvertError("stopped by the test")

    monkeypatch.setattr(runner_module, "run_feature_job", record)
    common = ["-o", str(tmp_path / "out"), "--stream", "both", "--device", "cpu", "--quiet"]
    cli("features", str(video.parent), *common, "--recipe", "mediapipe")
    cli("features", str(video.parent), *common, "--flow-region", "crop")
    assert seen[0].recipe == "mediapipe" and seen[0].decode.resize_mode == "mediapipe"
    assert (seen[0].decode.resize_shorter, seen[0].decode.crop, seen[0].decode.sampling) == (256, 224, "mediapipe")
    assert seen[1].flow_region == "crop" and seen[1].recipe == "deepmind"
    for args, message in ((["--flow-region", "whole"], "flow region must be one of resized, crop"),
                          (["--recipe", "mediapipe", "--flow-region", "crop"], "does not apply")):
        code, _, err = cli("features", str(video.parent), *common, *args)
        assert code != 0 and message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
