"""TF2 object-based checkpoints of the Sonnet 2 port (kinetics-i3d PR #127) convert exactly, without TensorFlow.

The checkpoints are written by TensorFlow itself: ``tf.train.Checkpoint(model=SonnetI3D)``
(:mod:`i3d_convert.reference.sonnet`, written independently of
:mod:`i3d_convert.names.tf2`) loaded with a synthetic checkpoint's weights.
They are read back by the package's TF-free reader and name table.
"""

from __future__ import annotations

import collections
import importlib.util

import numpy as np
import pytest
import torch

from i3d_convert.errors import MappingError
from i3d_convert.names.tf1 import mapping_table
from i3d_convert.names.tf2 import SCALE, SKIP, TENSOR, tf2_name_table

from conftest import SCHEMA_RELEASES

HAS_SONNET = importlib.util.find_spec("tensorflow") is not None and importlib.util.find_spec("sonnet") is not None
needs_sonnet = pytest.mark.skipif(not HAS_SONNET, reason="TensorFlow and dm-sonnet (the [tf] extra) are not installed")
SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
FRAMES = 9

#: Written out by hand from the port's module tree (tf_v2/i3d.py attribute names) and DeepMind's TF1 names.
KNOWN_PAIRS = {
    "Conv3d_1a_7x7/conv3d/w": "Conv3d_1a_7x7/conv_3d/w",
    "Conv3d_2c_3x3/batch_norm/offset": "Conv3d_2c_3x3/batch_norm/beta",
    "Mixed_3b/branch_0/branch_a/conv3d/w": "Mixed_3b/Branch_0/Conv3d_0a_1x1/conv_3d/w",
    "Mixed_3b/branch_1/branch_b/batch_norm/moving_mean/average": "Mixed_3b/Branch_1/Conv3d_0b_3x3/batch_norm/moving_mean",
    "Mixed_4f/branch_3/branch_b/batch_norm/offset": "Mixed_4f/Branch_3/Conv3d_0b_1x1/batch_norm/beta",
    "Mixed_5b/branch_2/branch_b/batch_norm/moving_variance/average":
        "Mixed_5b/Branch_2/Conv3d_0a_3x3/batch_norm/moving_variance",
    "Mixed_5c/branch_2/branch_b/conv3d/w": "Mixed_5c/Branch_2/Conv3d_0b_3x3/conv_3d/w",
    "Logits/logits/conv3d/w": "Logits/Conv3d_0c_1x1/conv_3d/w",
    "Logits/logits/conv3d/b": "Logits/Conv3d_0c_1x1/conv_3d/b",
}


# --------------------------------------------------------------------------- the name table (no TensorFlow)


def test_name_table_renames_the_ports_paths_to_deepminds_names():
    table = tf2_name_table()
    for tf2, tf1 in KNOWN_PAIRS.items():
        assert table[tf2].role == TENSOR and table[tf2].tf1_suffix == tf1, tf2
    roles = collections.Counter(rule.role for rule in table.values())
    assert roles == {TENSOR: 230, SCALE: 57, SKIP: 57 * 4 + 8}
    # every model tensor of DeepMind's checkpoint is produced exactly once
    targets = [rule.tf1_suffix for rule in table.values() if rule.role == TENSOR]
    assert sorted(targets) == sorted(mapping_table()) and len(set(targets)) == len(targets)
    assert table["Mixed_4b/branch_1/branch_a/batch_norm/moving_mean/_hidden"].role == SKIP
    assert table["Logits/logits/batch_norm/moving_variance/_counter"].role == SKIP
    assert "Mixed_4b/branch_3/branch_a/conv3d/w" not in table  # Branch_3's first step is the max pool


def test_flow_and_kinetics600_tables_follow_the_kernel_shapes():
    assert tf2_name_table(2, 400)["Conv3d_1a_7x7/conv3d/w"].tf1_suffix == "Conv3d_1a_7x7/conv_3d/w"
    assert len(tf2_name_table(3, 600)) == len(tf2_name_table())


# --------------------------------------------------------------------------- checkpoints written by TensorFlow


@pytest.fixture(scope="module")
def tf2_checkpoints(synthetic_checkpoint, tmp_path_factory):
    """release -> (TF1 prefix, TF2 object-based prefix written by tf.train.Checkpoint)."""
    if not HAS_SONNET:
        pytest.skip("TensorFlow and dm-sonnet (the [tf] extra) are not installed")
    from i3d_convert.reference.sonnet import SonnetI3D
    from i3d_convert.reference.tf_checkpoint import save_tf2_checkpoint
    from i3d_convert.io.checkpoint_reader import load_tf_checkpoint

    out = {}
    root = tmp_path_factory.mktemp("tf2")
    for release in SCHEMA_RELEASES:
        tf1 = synthetic_checkpoint(release)
        module = SonnetI3D.from_tf1_variables(load_tf_checkpoint(tf1))
        out[release] = (tf1, save_tf2_checkpoint(module, str(root / release / "model.ckpt")))
    return out


@needs_sonnet
@pytest.mark.parametrize("release", SCHEMA_RELEASES)
def test_sonnet2_checkpoint_converts_to_exactly_the_tf1_conversion(release, tf2_checkpoints):
    from i3d_convert import convert
    from i3d_convert.conversion.tf_to_torch import convert_checkpoint
    from i3d_convert.io.checkpoint_reader import list_variables

    tf1, tf2 = tf2_checkpoints[release]
    names = [name for name, _, _ in list_variables(tf2)]
    assert all(n.endswith(SUFFIX) or n == "_CHECKPOINTABLE_OBJECT_GRAPH" for n in names)
    result = convert_checkpoint(tf2)
    expected = convert(tf1)
    assert list(result.state_dict) == list(expected)
    for key, value in expected.items():
        assert torch.equal(result.state_dict[key], value), key
    assert result.metadata["tf_checkpoint_kind"] == "tf2-object"
    reasons = collections.Counter(result.skipped.values())
    assert reasons["batch-norm scale of ones (the port has create_scale=False)"] == 57
    assert reasons["Sonnet 2 moving-average state (inference uses 'average')"] == 57 * 4
    assert reasons["batch norm module of the Logits unit, which applies none"] == 2
    assert result.skipped["_CHECKPOINTABLE_OBJECT_GRAPH"] == "not a numeric tensor"
    assert len(result.skipped) + len(result.state_dict) == len(names)
    assert result.sources["Mixed_5b.Branch_2.Conv3d_0a_3x3.conv.weight"] == \
        "model/Mixed_5b/branch_2/branch_b/conv3d/w" + SUFFIX


@needs_sonnet
def test_tf_to_torch_cli_converts_a_sonnet2_checkpoint(tf2_checkpoints, tmp_path, cli):
    from i3d_convert import InceptionI3d
    from i3d_convert.conversion.sources import load_state_dict_file

    _, tf2 = tf2_checkpoints["flow_imagenet"]
    out = tmp_path / "flow.safetensors"
    code, stdout, stderr = cli("tf-to-torch", tf2, "-o", out, "--json")
    assert code == 0, stderr
    InceptionI3d(400, 2).load_state_dict(load_state_dict_file(out), strict=True)


@needs_sonnet
def test_verify_runs_tensorflow_on_the_restored_sonnet2_module_and_passes(tf2_checkpoints):
    from i3d_convert.verification.verify import verify

    _, tf2 = tf2_checkpoints["rgb_scratch_kin600"]
    report = verify(tf2, dtype="float64", frames=FRAMES)
    assert report.checkpoint.endswith("[tf2-object]")
    assert report.passed, [(r.name, r.rel_l2) for r in report.rows]
    assert report.row("Logits").shape == [1, 600]


# --------------------------------------------------------------------------- strictness (TF-free edits of a TF2 checkpoint)


def _edited(tf2_prefix, tmp_path, edit):
    from i3d_convert.io.checkpoint_reader import load_tf_checkpoint
    from i3d_convert.io.bundle_writer import write_checkpoint

    arrays = {k: v for k, v in load_tf_checkpoint(tf2_prefix).items() if v.dtype.kind in "fiu"}
    edit(arrays)
    prefix = tmp_path / "edited" / "model.ckpt"
    prefix.parent.mkdir()
    write_checkpoint(prefix, arrays)
    return prefix


@needs_sonnet
@pytest.mark.parametrize("case, message", [
    ("scale", "batch-norm scale that is not all ones"),
    ("unknown", "unknown variable 'model/Mixed_3b/branch_9/"),
    ("missing", "missing variable 'model/Mixed_4d/branch_1/branch_b/batch_norm/offset"),
    ("two_roots", "expected exactly one"),
])
def test_non_i3d_tf2_checkpoints_are_refused_naming_the_variable(case, message, tf2_checkpoints, tmp_path):
    from i3d_convert.conversion.tf_to_torch import convert_checkpoint

    _, tf2 = tf2_checkpoints["rgb_imagenet"]
    offset = "model/Mixed_4d/branch_1/branch_b/batch_norm/offset" + SUFFIX

    def edit(arrays):
        if case == "scale":
            name = "model/Mixed_4d/branch_1/branch_b/batch_norm/scale" + SUFFIX
            arrays[name] = arrays[name] * np.float32(1.5)
        elif case == "unknown":
            arrays["model/Mixed_3b/branch_9/branch_a/conv3d/w" + SUFFIX] = np.zeros((1,), np.float32)
        elif case == "missing":
            del arrays[offset]
        else:
            arrays["other/Conv3d_1a_7x7/conv3d/w" + SUFFIX] = arrays["model/Conv3d_1a_7x7/conv3d/w" + SUFFIX]

    with pytest.raises(MappingError, match=message):
        convert_checkpoint(_edited(tf2, tmp_path, edit))


@needs_sonnet
def test_save_counter_of_checkpoint_save_is_skipped(tf2_checkpoints, tmp_path):
    from i3d_convert.conversion.tf_to_torch import convert_checkpoint

    _, tf2 = tf2_checkpoints["rgb_imagenet"]

    def edit(arrays):  # tf.train.Checkpoint.save() (not write()) adds this counter
        arrays["save_counter" + SUFFIX] = np.array(1, np.int64)

    result = convert_checkpoint(_edited(tf2, tmp_path, edit))
    assert "save_counter" + SUFFIX in result.skipped and len(result.state_dict) == 230
