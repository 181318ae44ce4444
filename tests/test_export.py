"""torch-to-tf: exported checkpoints carry DeepMind's names, shapes and dtypes and round-trip bit for bit."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from i3d_convert import convert
from i3d_convert.errors import I3DConvertError, MappingError, OutputExistsError
from i3d_convert.conversion.torch_to_tf import SCOPES, export_to_tf, output_files
from i3d_convert.conversion.layouts import to_layout
from i3d_convert.names.tf1 import skip_reason
from i3d_convert.io.checkpoint_reader import load_tf_checkpoint

from conftest import REPO_ROOT, SCHEMA_RELEASES
from realweights import real_checkpoint, require_sdist, tf_variables

#: How each release schema is written back: (scope, batch norms as [1,1,1,1,C]).
EXPORT_OPTIONS = {
    "rgb_imagenet": (SCOPES["rgb"], False),
    "flow_imagenet": (SCOPES["flow"], False),
    "rgb_scratch_kin600": (SCOPES["none"], True),
}


def _model_tensors(prefix) -> dict:
    """The original checkpoint's model tensors (optimizer slots dropped), as TF's own reader returns them."""
    return {k: v for k, v in tf_variables(prefix).items() if skip_reason(k) is None}


def _assert_same_state_dicts(a, b):
    assert list(a) == list(b)
    for key in a:
        assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, key
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("release", SCHEMA_RELEASES)
def test_tf_torch_tf_torch_round_trip_is_bit_identical(release, synthetic_checkpoint, tmp_path):
    original = synthetic_checkpoint(release)
    scope, bn_5d = EXPORT_OPTIONS[release]
    first = convert(original)
    prefix = tmp_path / "model.ckpt"
    result = export_to_tf(first, prefix, scope=scope, bn_shape_5d=bn_5d)
    assert result.files == output_files(prefix) and all(f.is_file() for f in result.files)
    _assert_same_state_dicts(convert(prefix), first)
    # TensorFlow reads the export with the original's names, shapes, dtypes and values.
    expected, got = _model_tensors(original), tf_variables(prefix)
    assert sorted(got) == sorted(expected)
    for name, value in expected.items():
        assert got[name].dtype == value.dtype and got[name].shape == value.shape, name
        assert np.array_equal(got[name], value), name


def test_real_weights_round_trip_reproduces_the_checkpoint_files_byte_for_byte(tmp_path_factory, tmp_path):
    require_sdist()
    original = real_checkpoint(tmp_path_factory)
    first = convert(original)
    prefix = tmp_path / "model.ckpt"
    export_to_tf(first, prefix)
    _assert_same_state_dicts(convert(prefix), first)
    for ours, theirs in zip(output_files(prefix), output_files(original)):
        assert ours.read_bytes() == theirs.read_bytes(), ours.name
    got, expected = tf_variables(prefix), tf_variables(original)
    assert sorted(got) == sorted(expected) and len(got) == 230
    assert all(np.array_equal(got[k], expected[k]) and got[k].dtype == expected[k].dtype for k in got)


def test_piergiaj_layout_exports_the_same_checkpoint(synthetic_checkpoint, tmp_path):
    state = convert(synthetic_checkpoint("rgb_imagenet"))
    export_to_tf(state, tmp_path / "native.ckpt")
    export_to_tf(to_layout(state, "piergiaj"), tmp_path / "piergiaj.ckpt", layout="piergiaj")
    for a, b in zip(output_files(tmp_path / "native.ckpt"), output_files(tmp_path / "piergiaj.ckpt")):
        assert a.read_bytes() == b.read_bytes()


def test_existing_files_are_not_clobbered_without_overwrite(synthetic_checkpoint, tmp_path):
    state = convert(synthetic_checkpoint("rgb_imagenet"))
    prefix = tmp_path / "model.ckpt"
    index, data = output_files(prefix)
    data.write_bytes(b"precious")
    with pytest.raises(OutputExistsError):
        export_to_tf(state, prefix)
    assert data.read_bytes() == b"precious" and not index.exists()
    export_to_tf(state, prefix, overwrite=True)
    _assert_same_state_dicts(convert(prefix), state)
    with pytest.raises(OutputExistsError):
        export_to_tf(state, prefix)


def test_bad_state_dicts_and_options_are_errors(synthetic_checkpoint, tmp_path):
    state = convert(synthetic_checkpoint("rgb_imagenet"))
    with pytest.raises(MappingError, match="Flow"):
        export_to_tf(state, tmp_path / "a.ckpt", scope=SCOPES["flow"])
    broken = dict(state)
    del broken["Mixed_4c.Branch_1.Conv3d_0b_3x3.bn.running_var"]
    with pytest.raises(MappingError, match="running_var"):
        export_to_tf(broken, tmp_path / "b.ckpt")
    with pytest.raises(I3DConvertError, match="scope"):
        export_to_tf(state, tmp_path / "c.ckpt", scope="RGB")
    with pytest.raises(MappingError, match="Flow"):  # a folder created for the export is removed when it fails
        export_to_tf(state, tmp_path / "missing" / "model.ckpt", scope=SCOPES["flow"])
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_half_precision_state_dicts_are_written_as_float32(synthetic_checkpoint, tmp_path):
    state = convert(synthetic_checkpoint("rgb_imagenet"))
    half = {k: v.to(torch.bfloat16) for k, v in state.items()}
    export_to_tf(half, tmp_path / "model.ckpt")
    back = convert(tmp_path / "model.ckpt")
    _assert_same_state_dicts(back, {k: v.float() for k, v in half.items()})


def test_cli_writes_a_checkpoint_from_a_safetensors_file(synthetic_checkpoint, tmp_path, cli):
    source = synthetic_checkpoint("flow_imagenet")
    code, _, err = cli("tf-to-torch", source, "-o", tmp_path / "flow.safetensors", "-q")
    assert code == 0, err
    code, out, err = cli("torch-to-tf", tmp_path / "flow.safetensors", "-o", tmp_path / "out" / "model.ckpt", "--scope", "flow")
    assert code == 0, err
    assert "230 tensors" in out
    _assert_same_state_dicts(convert(tmp_path / "out" / "model.ckpt"), convert(source))
    assert all(k.startswith("Flow/inception_i3d/") for k in load_tf_checkpoint(tmp_path / "out" / "model.ckpt"))
    code, out, err = cli("torch-to-tf", tmp_path / "flow.safetensors", "-o", tmp_path / "out" / "model.ckpt", "--scope", "flow")
    assert code == 1 and "--overwrite" in err


@pytest.mark.parametrize("args,message", [
    (["--scope", "rgbb"], "unknown scope"),
    (["--layout", "other"], "unknown layout"),
])
def test_cli_rejects_unknown_options_in_one_line(args, message, synthetic_checkpoint, tmp_path, cli):
    code, _, err = cli("tf-to-torch", synthetic_checkpoint("rgb_imagenet"), "-o", tmp_path / "m.pt", "-q")
    assert code == 0, err
    code, _, err = cli("torch-to-tf", tmp_path / "m.pt", "-o", tmp_path / "model.ckpt", *args)
    assert code == 1 and message in err and err.count("\n") == 1
    assert not any(p.name.startswith("model.ckpt") for p in tmp_path.iterdir())


def test_export_never_imports_tensorflow(synthetic_checkpoint, tmp_path):
    script = (
        "import sys\n"
        "from i3d_convert import convert\n"
        "from i3d_convert.conversion.torch_to_tf import export_to_tf\n"
        f"export_to_tf(convert({str(synthetic_checkpoint('rgb_imagenet'))!r}), {str(tmp_path / 'model.ckpt')!r})\n"
        "assert 'tensorflow' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, cwd=REPO_ROOT, timeout=300)


def test_tf1_saver_restores_the_export(synthetic_checkpoint, tmp_path):
    """A TF1 graph with DeepMind's variable names restores the exported checkpoint, as i3d.py's Saver would."""
    import tensorflow as tf

    prefix = tmp_path / "model.ckpt"
    export_to_tf(convert(synthetic_checkpoint("rgb_imagenet")), prefix)
    expected = _model_tensors(synthetic_checkpoint("rgb_imagenet"))
    graph = tf.Graph()
    with graph.as_default():
        variables = {name: tf.compat.v1.get_variable(name, shape=value.shape, dtype=tf.float32,
                                                     initializer=tf.compat.v1.zeros_initializer())
                     for name, value in expected.items()}
        saver = tf.compat.v1.train.Saver(var_list=variables)
        with tf.compat.v1.Session(graph=graph) as session:
            saver.restore(session, str(prefix))
            restored = session.run(variables)
    assert sorted(restored) == sorted(expected)
    assert all(np.array_equal(restored[k], expected[k]) for k in expected)
