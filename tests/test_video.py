"""Clips are read as [1, T, H, W, 3] float32 in [-1, 1]; broken files give one clear error."""

from __future__ import annotations

import numpy as np
import pytest

from i3d_convert.errors import I3DConvertError
from i3d_convert.io.video import load_gif, load_video, read_frames, to_ncthw

from conftest import KINETICS_FIXTURES, requires_shared

GIF = KINETICS_FIXTURES / "v_CricketShot_g04_c01_rgb.gif"


def _write_gif(path, frames_u8):
    from PIL import Image

    images = [Image.fromarray(f) for f in frames_u8]
    images[0].save(path, save_all=True, append_images=images[1:], duration=40, loop=0)


def test_deepmind_sample_gif_is_79_rgb_frames_rescaled_to_minus_one_one():
    requires_shared(GIF)
    from PIL import Image, ImageSequence

    clip = load_gif(GIF)
    assert clip.shape == (1, 79, 224, 224, 3) and clip.dtype == np.float32
    with Image.open(GIF) as im:
        u8 = np.stack([np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(im)])
    np.testing.assert_array_equal(clip[0], u8.astype(np.float32) / 255 * 2 - 1)
    assert -1.0 <= clip.min() < -0.9 and 0.9 < clip.max() <= 1.0


def test_frames_takes_the_first_frames_and_refuses_more_than_there_are():
    requires_shared(GIF)
    np.testing.assert_array_equal(load_video(GIF, frames=10), load_video(GIF)[:, :10])
    with pytest.raises(I3DConvertError, match="79"):
        load_video(GIF, frames=80)


def test_other_sizes_are_resized_on_the_shorter_side_and_centre_cropped(tmp_path):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (3, 80, 120, 3), dtype=np.uint8)
    path = tmp_path / "clip.gif"
    _write_gif(path, frames)
    u8 = read_frames(path, size=64)
    assert u8.shape == (3, 64, 64, 3) and u8.dtype == np.uint8
    assert read_frames(path, size=None).shape == (3, 80, 120, 3)


def test_to_ncthw_is_the_models_layout():
    x = np.arange(2 * 3 * 4 * 5 * 3, dtype=np.float32).reshape(2, 3, 4, 5, 3)
    t = to_ncthw(x)
    assert tuple(t.shape) == (2, 3, 3, 4, 5) and t.is_contiguous()
    assert t[1, 2, 0, 3, 4].item() == x[1, 0, 3, 4, 2]


@pytest.mark.parametrize("case", ["missing", "empty", "text", "truncated"])
def test_broken_files_raise_an_error_naming_the_file(case, tmp_path):
    path = tmp_path / f"{case}.gif"
    if case == "empty":
        path.write_bytes(b"")
    elif case == "text":
        path.write_text("not a gif\n")
    elif case == "truncated":
        good = tmp_path / "good.gif"
        _write_gif(good, np.random.default_rng(1).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8))
        path.write_bytes(good.read_bytes()[:900])
    with pytest.raises(I3DConvertError) as info:
        load_video(path, size=None)
    assert str(path) in str(info.value)


def test_bad_arguments_are_errors(tmp_path):
    path = tmp_path / "c.gif"
    _write_gif(path, np.zeros((2, 8, 8, 3), dtype=np.uint8))
    for kwargs in ({"frames": 0}, {"size": 0}):
        with pytest.raises(I3DConvertError):
            load_video(path, **kwargs)
