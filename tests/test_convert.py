"""tf-to-torch: strict mapping, provenance, output formats, layouts and bad input."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch

from i3d_convert import InceptionI3d, convert_checkpoint, load_state_dict_file
from i3d_convert.names.tf1 import mapping_table
from i3d_convert.models.ports import PiergiajI3D
from i3d_convert.weights.releases import RELEASES
from i3d_convert.weights.synthetic import random_clip, synthetic_tf_arrays
from i3d_convert.io.checkpoint_reader import load_tf_checkpoint
from i3d_convert.io.bundle_writer import write_checkpoint

from conftest import REPO_ROOT


def _no_output_left(path: Path) -> bool:
    return not path.exists() and not list(path.parent.glob(f".{path.name}.*"))


@pytest.mark.parametrize("release", list(RELEASES))
def test_every_release_schema_converts_and_loads_strictly(synthetic_checkpoint, release, tmp_path):
    rel = RELEASES[release]
    result = convert_checkpoint(synthetic_checkpoint(release))
    assert (result.in_channels, result.num_classes, result.scope) == (rel.in_channels, rel.num_classes, rel.scope)
    assert len(result.state_dict) == 230
    expected_skipped = rel.num_variables - 230
    assert len(result.skipped) == expected_skipped
    assert all(reason == "optimizer slot" for reason in result.skipped.values())
    model = InceptionI3d(rel.num_classes, rel.in_channels)
    model.load_state_dict(result.state_dict, strict=True)


def test_tensors_are_tf_tensors_in_torch_layout(synthetic_checkpoint):
    """Checked against TensorFlow's own reader, not ours."""
    import tensorflow as tf

    prefix = synthetic_checkpoint("rgb_scratch_kin600")
    result = convert_checkpoint(prefix)
    reader = tf.train.load_checkpoint(str(prefix))
    table = mapping_table(3, 600)
    for suffix, rule in table.items():
        tf_value = reader.get_tensor(suffix)  # kin600 has no scope
        got = result.state_dict[rule.torch_key].numpy()
        if tf_value.ndim == 5 and rule.kind == "conv_weight":
            expected = tf_value.transpose(4, 3, 0, 1, 2)
        else:
            assert tf_value.shape == (1, 1, 1, 1, rule.torch_shape[0]) or tf_value.shape == rule.torch_shape
            expected = tf_value.reshape(-1)
        assert got.shape == rule.torch_shape
        assert np.array_equal(got, expected), rule.torch_key
        assert got.flags["C_CONTIGUOUS"]


def test_safetensors_output_records_provenance(synthetic_checkpoint, tmp_path, cli):
    prefix = synthetic_checkpoint("flow_imagenet")
    out = tmp_path / "flow.safetensors"
    code, stdout, stderr = cli("tf-to-torch", prefix, "-o", out)
    assert code == 0, stderr
    from safetensors import safe_open

    with safe_open(str(out), "pt") as f:
        meta = f.metadata()
    data_file = Path(str(prefix) + ".data-00000-of-00001")
    assert meta["source_sha256"] == hashlib.sha256(data_file.read_bytes()).hexdigest()
    assert meta["num_classes"] == "400" and meta["in_channels"] == "2"
    assert float(meta["bn_eps"]) == 1e-3
    assert meta["producer"].startswith("i3d-convert ")
    assert meta["source_checkpoint"].endswith("model.ckpt")
    model = InceptionI3d(400, 2)
    model.load_state_dict(load_state_dict_file(out), strict=True)


def test_pt_output_is_a_plain_state_dict_loadable_with_weights_only(synthetic_checkpoint, tmp_path, cli):
    out = tmp_path / "rgb.pt"
    code, _, stderr = cli("tf-to-torch", synthetic_checkpoint("rgb_imagenet"), "-o", out, "--quiet")
    assert code == 0, stderr
    state = torch.load(out, weights_only=True)
    assert state._metadata[""]["i3d_convert"]["num_classes"] == "400"
    InceptionI3d().load_state_dict(state, strict=True)


def test_conversion_never_imports_tensorflow(synthetic_checkpoint, tmp_path):
    out = tmp_path / "x.safetensors"
    code = (
        "import sys; from i3d_convert.cli.app import main\n"
        f"try:\n    main(['tf-to-torch', {str(synthetic_checkpoint('rgb_imagenet'))!r}, '-o', {str(out)!r}, '-q'])\n"
        "except SystemExit as e:\n    assert not e.code, e.code\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr
    assert out.exists()


def test_piergiaj_layout_matches_that_ports_state_dict(synthetic_checkpoint, tmp_path, cli):
    expected = {}
    for line in (REPO_ROOT / "tests" / "data" / "piergiaj_state_dict.tsv").read_text().splitlines()[2:]:
        key, dtype, shape = line.split("\t")
        expected[key] = (dtype, json.loads(shape))
    out = tmp_path / "piergiaj.pt"
    code, _, stderr = cli("tf-to-torch", synthetic_checkpoint("rgb_imagenet"), "-o", out, "--layout", "piergiaj")
    assert code == 0, stderr
    state = torch.load(out, weights_only=True)
    got = {k: (str(v.dtype).replace("torch.", ""), list(v.shape)) for k, v in state.items()}
    assert got == expected
    port = PiergiajI3D()
    port.load_state_dict(state, strict=True)
    # Same network: the port's per-step logits averaged over time equal ours.
    ours = InceptionI3d()
    ours.load_state_dict(convert_checkpoint(synthetic_checkpoint("rgb_imagenet")).state_dict, strict=True)
    clip = random_clip((1, 3, 9, 224, 224), seed=5, dtype=torch.float64)
    with torch.inference_mode():
        a = port.double().eval().video_logits(clip)
        b = ours.double().eval()(clip)
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


# ---------------------------------------------------------------- bad input


@lru_cache(maxsize=1)
def _small_seed_arrays() -> dict:
    return synthetic_tf_arrays("rgb_imagenet", seed=3)


def _write_variant(tmp_path: Path, mutate) -> Path:
    arrays = dict(_small_seed_arrays())
    mutate(arrays)
    prefix = tmp_path / "bad" / "model.ckpt"
    prefix.parent.mkdir()
    write_checkpoint(prefix, arrays)
    return prefix


def _flip_data_byte(prefix: Path) -> None:
    data = Path(str(prefix) + ".data-00000-of-00001")
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0x40
    data.write_bytes(bytes(raw))


BAD_INPUTS = {
    "missing file": (lambda tmp, ck: tmp / "nope" / "model.ckpt", "not found"),
    "not a checkpoint": (lambda tmp, ck: _random_file(tmp / "junk.index"), "not a TensorFlow checkpoint"),
    "truncated data file": (lambda tmp, ck: _truncate_data(tmp, ck), "truncated data file"),
    "crc mismatch": (lambda tmp, ck: _copy_and(tmp, ck, _flip_data_byte), "crc32c"),
    "wrong shape": (lambda tmp, ck: _write_variant(tmp, lambda a: a.__setitem__(
        "RGB/inception_i3d/Mixed_4c/Branch_1/Conv3d_0b_3x3/conv_3d/w", np.zeros((3, 3, 3, 112, 225), np.float32))),
        "Mixed_4c/Branch_1/Conv3d_0b_3x3/conv_3d/w"),
    "unknown variable": (lambda tmp, ck: _write_variant(tmp, lambda a: a.__setitem__(
        "RGB/inception_i3d/Mixed_3b/Branch_4/Conv3d_0a_1x1/conv_3d/w", np.zeros((1, 1, 1, 192, 8), np.float32))),
        "unknown variable"),
    "missing variable": (lambda tmp, ck: _write_variant(tmp, lambda a: a.pop(
        "RGB/inception_i3d/Mixed_5c/Branch_3/Conv3d_0b_1x1/batch_norm/moving_mean")), "missing variable"),
}


def _random_file(path: Path) -> Path:
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    return path


def _copy_and(tmp: Path, prefix: Path, mutate) -> Path:
    target = tmp / "copy"
    target.mkdir()
    for f in prefix.parent.iterdir():
        (target / f.name).write_bytes(f.read_bytes())
    new = target / prefix.name
    mutate(new)
    return new


def _truncate_data(tmp: Path, prefix: Path) -> Path:
    def cut(p: Path) -> None:
        data = Path(str(p) + ".data-00000-of-00001")
        data.write_bytes(data.read_bytes()[: data.stat().st_size // 3])

    return _copy_and(tmp, prefix, cut)


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gets_one_line_error_and_no_output(case, synthetic_checkpoint, tmp_path, cli):
    make, phrase = BAD_INPUTS[case]
    source = make(tmp_path, synthetic_checkpoint("rgb_imagenet"))
    out = tmp_path / "out" / "converted.safetensors"
    out.parent.mkdir()
    code, stdout, stderr = cli("tf-to-torch", source, "-o", out)
    assert code == 1
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("i3d-convert: error: ")
    assert str(source.parent) in lines[0] or str(source) in lines[0]
    assert phrase in lines[0]
    assert "Traceback" not in stderr
    assert _no_output_left(out)


def test_existing_output_is_not_clobbered_without_overwrite(synthetic_checkpoint, tmp_path, cli):
    out = tmp_path / "keep.safetensors"
    out.write_bytes(b"precious")
    code, _, stderr = cli("tf-to-torch", synthetic_checkpoint("rgb_imagenet"), "-o", out)
    assert code == 1 and "exists" in stderr and str(out) in stderr
    assert out.read_bytes() == b"precious"
    code, _, stderr = cli("tf-to-torch", synthetic_checkpoint("rgb_imagenet"), "-o", out, "--overwrite", "-q")
    assert code == 0, stderr
    assert len(load_state_dict_file(out)) == 230


def test_info_lists_every_variable_and_its_target(cli):
    from i3d_convert.weights.releases import release_index_path

    code, stdout, stderr = cli("info", release_index_path("rgb_scratch_kin600"), "--json")
    assert code == 0, stderr
    report = json.loads(stdout)
    rows = report["variables"]
    assert len(rows) == 346
    assert report["scope"] == ""
    assert sum(r["torch_key"] == "skipped: optimizer slot" for r in rows) == 116
    beta = next(r for r in rows if r["name"] == "Mixed_5b/Branch_2/Conv3d_0a_3x3/batch_norm/beta")
    assert beta["shape"] == [1, 1, 1, 1, 128]
    assert beta["torch_key"] == "Mixed_5b.Branch_2.Conv3d_0a_3x3.bn.bias" and beta["torch_shape"] == [128]
