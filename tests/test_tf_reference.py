"""Tests of the TensorFlow oracle (i3d_convert.reference), independent of PyTorch.

They show that the reference is right on its own terms:

* the variable names and shapes it expects are exactly those of DeepMind's
  released checkpoints (digests of the real ``model.ckpt.index`` listings);
* the plain ``tf.nn`` forward and the Sonnet 2 module -- two separately written
  structures -- agree to float64 rounding on a random checkpoint, Logits
  included, and the Logits match a numpy recomputation from Mixed_5c;
* the endpoint shapes for a 16x224x224 clip are the known I3D shapes;
* TF 'SAME' temporal padding picks the frames it should (central-slice kernels);
* the float64 pooling replacements equal the native float32 ops;
* errors are strict; the TF2 object-graph names are those of the Sonnet 2 port;
* importing the module prevents the TF-then-torchvision segfault.

TensorFlow must only be imported through i3d_convert.reference.tf_runtime (which loads
torchvision/triton first); ``pytest.importorskip("tensorflow")`` would import it
directly and could make a later ``import torchvision`` in the same session crash.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

if importlib.util.find_spec("tensorflow") is None:  # pragma: no cover
    pytest.skip("tensorflow is not installed", allow_module_level=True)

from i3d_convert.reference import network, sonnet, tf_checkpoint  # noqa: E402  (imports tensorflow safely)
from i3d_convert.reference import tf_forward as forward  # noqa: E402
from i3d_convert.reference.tf_runtime import tf  # noqa: E402
from i3d_convert.errors import CheckpointFormatError, MappingError  # noqa: E402

HAS_SONNET = sonnet.snt is not None
needs_sonnet = pytest.mark.skipif(not HAS_SONNET, reason="dm-sonnet 2 is not installed")
REPO = Path(__file__).resolve().parents[1]

RGB = "RGB/inception_i3d/"
FLOW = "Flow/inception_i3d/"


def rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def random_variables(seed: int = 0, in_channels: int = 3, num_classes: int = 400, scope: str = RGB,
                     bn_shape: str = "vector") -> dict:
    """A random float64 checkpoint dict: He-scaled conv weights, BN variance ~ 1."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in network.expected_tf1_variables(in_channels, num_classes, scope, bn_shape).items():
        if name.endswith("/conv_3d/w"):
            out[name] = rng.normal(0.0, np.sqrt(2.0 / np.prod(shape[:-1])), shape)
        elif name.endswith("/moving_variance"):
            out[name] = rng.uniform(0.5, 1.5, shape)
        else:  # beta, moving_mean, logits bias
            out[name] = rng.normal(0.0, 0.1, shape)
    return out


def random_clip(shape, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1.0, 1.0, shape)


@pytest.fixture(scope="module")
def rgb_vars() -> dict:
    return random_variables()


@pytest.fixture(scope="module")
def sonnet64(rgb_vars):
    if not HAS_SONNET:
        pytest.skip("dm-sonnet 2 is not installed")
    return sonnet.SonnetI3D.from_tf1_variables(rgb_vars, dtype="float64")


# --------------------------------------------------------------------------
# Names and shapes against DeepMind's checkpoints

# sha256 of "\n".join(sorted(f"{name} {shape}")) over the variables of the
# released checkpoints (optimizer slots left out), read from the model.ckpt.index
# files of github.com/deepmind/kinetics-i3d (data/checkpoints/*), all float32.
DEEPMIND_LISTINGS = {
    "rgb_imagenet": (3, 400, RGB, "vector", 230,
                     "f84debc40d9af1db8c40eb7da641b78db930e110b1d12f628b6a250617ac0b3e"),
    "flow_imagenet": (2, 400, FLOW, "vector", 230,
                      "9036f72e279e0fb85edb96103bb2865ebb2d67f27b686c6e243aa1149841cc3f"),
    "rgb_scratch_kin600": (3, 600, "", "rank5", 230,
                           "14c53bdea5012cf4117661c86549ebbbec6a1bd0cd05c05e9066ae74ee49c7cb"),
}


@pytest.mark.parametrize("checkpoint", sorted(DEEPMIND_LISTINGS))
def test_expected_variables_are_deepmind_checkpoint_listing(checkpoint):
    in_channels, num_classes, scope, bn_shape, count, digest = DEEPMIND_LISTINGS[checkpoint]
    spec = network.expected_tf1_variables(in_channels, num_classes, scope, bn_shape)
    lines = sorted(f"{name} {list(shape)}" for name, shape in spec.items())
    assert len(lines) == count
    assert hashlib.sha256("\n".join(lines).encode()).hexdigest() == digest
    # a few names to localize a failure
    assert spec[scope + "Mixed_5b/Branch_2/Conv3d_0a_3x3/conv_3d/w"] == (3, 3, 3, 32, 128)
    assert spec[scope + "Logits/Conv3d_0c_1x1/conv_3d/w"] == (1, 1, 1, 1024, num_classes)


# --------------------------------------------------------------------------
# tf_forward vs SonnetI3D


@needs_sonnet
def test_tf_forward_and_sonnet_agree_float64_small_clip(rgb_vars, sonnet64):
    clip = random_clip((1, 8, 64, 64, 3))
    ref = forward.tf_forward(rgb_vars, clip, dtype="float64", final_endpoint="Mixed_5c")
    _, sonnet = sonnet64(tf.constant(clip), final_endpoint="Mixed_5c")
    assert list(ref) == list(network.ENDPOINTS[:-1])
    assert list(sonnet) == list(ref)
    for name, value in ref.items():
        assert value.dtype == np.float64, name
        assert np.std(value) > 1e-2, name  # the check is not vacuous
        assert rel_l2(sonnet[name].numpy(), value) <= 1e-12, name
    # float64 really ran in float64: float32 is close but not equal
    ref32 = forward.tf_forward(rgb_vars, clip, dtype="float32", final_endpoint="Mixed_5c")
    assert ref32["Mixed_5c"].dtype == np.float32
    assert 0 < rel_l2(ref32["Mixed_5c"], ref["Mixed_5c"]) < 1e-4


def numpy_logits(mixed_5c: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """avg pool [2, 7, 7] VALID stride 1 -> 1x1x1 conv + bias -> mean over time."""
    _, t, h, wd, _ = mixed_5c.shape
    assert (h, wd) == (7, 7)
    pooled = np.stack([mixed_5c[:, i:i + 2].mean(axis=(1, 2, 3)) for i in range(t - 1)], axis=1)
    return (pooled @ w.reshape(w.shape[-2:]) + b).mean(axis=1)


@needs_sonnet
def test_logits_agree_float64_224(rgb_vars, sonnet64):
    clip = random_clip((1, 9, 224, 224, 3), seed=2)  # 9 frames: Mixed_5c is 2x7x7
    ref = forward.tf_forward(rgb_vars, clip, dtype="float64")
    logits, sonnet = sonnet64(tf.constant(clip))
    assert ref["Mixed_5c"].shape == (1, 2, 7, 7, 1024)
    assert ref["Logits"].shape == (1, 400)
    assert np.std(ref["Logits"]) > 0.1
    assert rel_l2(logits.numpy(), ref["Logits"]) <= 1e-12
    assert rel_l2(sonnet["Mixed_5c"].numpy(), ref["Mixed_5c"]) <= 1e-12
    expected = numpy_logits(ref["Mixed_5c"], rgb_vars[RGB + "Logits/Conv3d_0c_1x1/conv_3d/w"],
                            rgb_vars[RGB + "Logits/Conv3d_0c_1x1/conv_3d/b"])
    assert rel_l2(ref["Logits"], expected) <= 1e-12


KNOWN_SHAPES_16x224 = {
    "Conv3d_1a_7x7": (1, 8, 112, 112, 64),
    "MaxPool3d_2a_3x3": (1, 8, 56, 56, 64),
    "Conv3d_2b_1x1": (1, 8, 56, 56, 64),
    "Conv3d_2c_3x3": (1, 8, 56, 56, 192),
    "MaxPool3d_3a_3x3": (1, 8, 28, 28, 192),
    "Mixed_3b": (1, 8, 28, 28, 256),
    "Mixed_3c": (1, 8, 28, 28, 480),
    "MaxPool3d_4a_3x3": (1, 4, 14, 14, 480),
    "Mixed_4b": (1, 4, 14, 14, 512),
    "Mixed_4c": (1, 4, 14, 14, 512),
    "Mixed_4d": (1, 4, 14, 14, 512),
    "Mixed_4e": (1, 4, 14, 14, 528),
    "Mixed_4f": (1, 4, 14, 14, 832),
    "MaxPool3d_5a_2x2": (1, 2, 7, 7, 832),
    "Mixed_5b": (1, 2, 7, 7, 832),
    "Mixed_5c": (1, 2, 7, 7, 1024),
    "Logits": (1, 400),
}


def test_endpoint_shapes_16x224(rgb_vars):
    out = forward.tf_forward(rgb_vars, random_clip((1, 16, 224, 224, 3), seed=3))
    assert {k: v.shape for k, v in out.items()} == KNOWN_SHAPES_16x224
    assert list(out) == list(network.ENDPOINTS)
    assert all(v.dtype == np.float32 for v in out.values())
    assert np.isfinite(out["Logits"]).all()


# --------------------------------------------------------------------------
# TF 'SAME' temporal semantics with central-slice temporal kernels


def central_slice_variables(seed: int = 4) -> dict:
    """Every temporal kernel is zero except its central time slice (a per-frame 2D net)."""
    out = random_variables(seed)
    for name, value in out.items():
        if name.endswith("/conv_3d/w") and value.shape[0] > 1:
            kept = np.zeros_like(value)
            centre = value.shape[0] // 2
            kept[centre] = value[centre]
            out[name] = kept
    return out


def test_boring_video_is_constant_in_time_and_equals_single_frame():
    variables = central_slice_variables()
    frame = random_clip((1, 1, 32, 32, 3), seed=5)
    boring = np.repeat(frame, 8, axis=1)
    out = forward.tf_forward(variables, boring, dtype="float64", final_endpoint="Mixed_5c")
    single = forward.tf_forward(variables, frame, dtype="float64", final_endpoint="Mixed_5c")
    for name, value in out.items():
        assert single[name].shape[1] == 1
        expected = np.broadcast_to(single[name], value.shape)
        assert np.std(value) > 1e-3, name
        assert rel_l2(value, expected) <= 1e-12, name


def test_same_padding_takes_frames_2t_plus_1_in_conv1():
    """For 8 frames, k=7, stride 2, TF 'SAME' pads 2 before and 3 after, so output
    t is centred on frame 2t+1 (a symmetric 3/3 padding would give frame 2t)."""
    variables = central_slice_variables()
    clip = random_clip((1, 8, 32, 32, 3), seed=6)
    out = forward.tf_forward(variables, clip, dtype="float64", final_endpoint="Conv3d_1a_7x7")["Conv3d_1a_7x7"]
    assert out.shape == (1, 4, 16, 16, 64)
    frames = np.transpose(clip[:, :], (1, 0, 2, 3, 4))  # [8, 1, H, W, C]: one frame per batch item
    per_frame = forward.tf_forward(variables, frames, dtype="float64", final_endpoint="Conv3d_1a_7x7")
    per_frame = per_frame["Conv3d_1a_7x7"][:, 0]
    for t in range(4):
        assert rel_l2(out[0, t], per_frame[2 * t + 1]) <= 1e-12
        assert rel_l2(out[0, t], per_frame[2 * t]) > 1e-2


# --------------------------------------------------------------------------
# float64 pooling replacements vs the native float32 ops

POOLS = [((1, 3, 3), (1, 2, 2)), ((3, 3, 3), (2, 2, 2)), ((2, 2, 2), (2, 2, 2)), ((3, 3, 3), (1, 1, 1))]


@pytest.mark.parametrize("shape", [(2, 5, 9, 8, 3), (1, 4, 6, 7, 2), (1, 1, 1, 1, 4)])
@pytest.mark.parametrize("ksize,strides", POOLS)
def test_max_pool_fallbacks_equal_native(shape, ksize, strides):
    # all negative: zero padding instead of 'ignore the padding' would show
    x32 = -np.random.default_rng(7).uniform(1.0, 2.0, shape).astype(np.float32)
    native = tf.nn.max_pool3d(x32, [1, *ksize, 1], [1, *strides, 1], "SAME").numpy()
    x64 = tf.constant(x32.astype(np.float64))
    by_slices = forward._max_pool3d_same_by_slices(x64, ksize, strides).numpy()
    assert by_slices.dtype == np.float64
    np.testing.assert_array_equal(by_slices, native.astype(np.float64))
    same32 = forward._max_pool3d_same_by_slices(tf.constant(x32), ksize, strides).numpy()
    np.testing.assert_array_equal(same32, native)
    if HAS_SONNET:
        patches = sonnet._sonnet_max_pool(x64, ksize, strides).numpy()
        np.testing.assert_array_equal(patches, native.astype(np.float64))


@pytest.mark.parametrize("shape", [(1, 2, 7, 7, 5), (2, 4, 7, 7, 3)])
def test_avg_pool_fallbacks_equal_native(shape):
    x32 = np.random.default_rng(8).normal(size=shape).astype(np.float32)
    native = tf.nn.avg_pool3d(x32, [1, 2, 7, 7, 1], [1, 1, 1, 1, 1], "VALID").numpy()
    x64 = tf.constant(x32.astype(np.float64))
    by_slices = forward._avg_pool3d_valid_by_slices(x64, (2, 7, 7)).numpy()
    assert by_slices.dtype == np.float64
    assert rel_l2(by_slices, native) <= 1e-6
    exact = np.stack([x32[:, i:i + 2].astype(np.float64).mean(axis=(1, 2, 3), keepdims=True)[:, 0]
                      for i in range(shape[1] - 1)], axis=1)
    assert rel_l2(by_slices, exact) <= 1e-14
    if HAS_SONNET:
        assert rel_l2(sonnet._sonnet_avg_pool_logits(x64).numpy(), exact) <= 1e-14


# --------------------------------------------------------------------------
# Schemas and strictness

SMALL = (1, 4, 16, 16, 3)


def to_kinetics600_schema(variables: dict, scope: str = RGB) -> dict:
    """Unscoped names, [1,1,1,1,C] batch-norm tensors, /Momentum slots."""
    out = {}
    for name, value in variables.items():
        short = name[len(scope):]
        if "/batch_norm/" in short:
            value = value.reshape(1, 1, 1, 1, -1)
        out[short] = value
        if short.endswith(("/w", "/b", "/beta")):
            out[short + "/Momentum"] = np.full_like(value, np.nan)
    return out


def test_kinetics600_schema_gives_identical_output(rgb_vars):
    clip = random_clip(SMALL)
    ref = forward.tf_forward(rgb_vars, clip, dtype="float64", final_endpoint="Mixed_5c")
    kin600 = to_kinetics600_schema(rgb_vars)
    assert network.detect_scope(list(kin600)) == ""
    out = forward.tf_forward(kin600, clip, dtype="float64", final_endpoint="Mixed_5c")
    for name in ref:
        np.testing.assert_array_equal(out[name], ref[name])


def test_flow_scope_and_two_stream_dict(rgb_vars):
    flow_vars = random_variables(seed=9, in_channels=2, scope=FLOW)
    both = {**rgb_vars, **flow_vars}
    with pytest.raises(ValueError, match="several I3D models"):
        forward.tf_forward(both, random_clip(SMALL), final_endpoint="Conv3d_2b_1x1")
    flow_clip = random_clip(SMALL[:-1] + (2,))
    alone = forward.tf_forward(flow_vars, flow_clip, final_endpoint="Conv3d_2b_1x1")
    picked = forward.tf_forward(both, flow_clip, final_endpoint="Conv3d_2b_1x1", scope=FLOW)
    np.testing.assert_array_equal(alone["Conv3d_2b_1x1"], picked["Conv3d_2b_1x1"])
    with pytest.raises(ValueError, match="channels"):
        forward.tf_forward(flow_vars, random_clip(SMALL), final_endpoint="Conv3d_1a_7x7")


def test_missing_variable_is_key_error(rgb_vars):
    variables = dict(rgb_vars)
    name = RGB + "Mixed_4c/Branch_1/Conv3d_0b_3x3/batch_norm/moving_mean"
    del variables[name]
    with pytest.raises(KeyError, match="Mixed_4c/Branch_1/Conv3d_0b_3x3") as info:
        forward.tf_forward(variables, random_clip(SMALL), final_endpoint="Mixed_5c")
    assert isinstance(info.value, MappingError)
    assert name in str(info.value) and not str(info.value).startswith('"')
    # not needed before Mixed_4c
    forward.tf_forward(variables, random_clip(SMALL), final_endpoint="Mixed_4b")
    with pytest.raises(KeyError, match="not an I3D checkpoint"):
        forward.tf_forward({"foo": np.zeros(3)}, random_clip(SMALL))


def test_wrong_shape_and_unknown_variable_are_value_errors(rgb_vars):
    variables = dict(rgb_vars)
    name = RGB + "Mixed_3c/Branch_2/Conv3d_0b_3x3/conv_3d/w"
    variables[name] = variables[name][:, :, :, :, :95]
    with pytest.raises(ValueError, match="Mixed_3c/Branch_2/Conv3d_0b_3x3/conv_3d/w"):
        forward.tf_forward(variables, random_clip(SMALL), final_endpoint="Conv3d_1a_7x7")
    variables = dict(rgb_vars)
    variables[RGB + "Mixed_3b/Branch_0/Conv3d_0a_1x1/batch_norm/gamma"] = np.ones(64)
    with pytest.raises(ValueError, match="not part of I3D"):
        forward.tf_forward(variables, random_clip(SMALL), final_endpoint="Conv3d_1a_7x7")
    variables = dict(rgb_vars)
    variables[RGB + "global_step"] = np.array(1)
    with pytest.raises(ValueError, match="global_step"):
        forward.tf_forward(variables, random_clip(SMALL), final_endpoint="Conv3d_1a_7x7")


def test_argument_errors(rgb_vars):
    clip = random_clip(SMALL)
    with pytest.raises(ValueError, match="Mixed_5c"):  # Logits need a 7x7 Mixed_5c map
        forward.tf_forward(rgb_vars, clip)
    with pytest.raises(ValueError, match="dtype"):
        forward.tf_forward(rgb_vars, clip, dtype="float16", final_endpoint="Conv3d_1a_7x7")
    with pytest.raises(ValueError, match="device"):
        forward.tf_forward(rgb_vars, clip, device="tpu", final_endpoint="Conv3d_1a_7x7")
    with pytest.raises(ValueError, match="final_endpoint"):
        forward.tf_forward(rgb_vars, clip, final_endpoint="Predictions")
    with pytest.raises(ValueError, match="clip"):
        forward.tf_forward(rgb_vars, clip[0], final_endpoint="Conv3d_1a_7x7")


def test_tf32_setting_is_restored(rgb_vars):
    before = tf.config.experimental.tensor_float_32_execution_enabled()
    forward.tf_forward(rgb_vars, random_clip(SMALL), final_endpoint="Conv3d_1a_7x7", allow_tf32=not before)
    assert tf.config.experimental.tensor_float_32_execution_enabled() == before


@needs_sonnet
def test_sonnet_load_is_strict_and_atomic(rgb_vars):
    module = sonnet.SonnetI3D()
    module.build(3, "float64")
    w = module.Conv3d_1a_7x7.conv3d.w
    before = w.numpy().copy()

    variables = dict(rgb_vars)
    del variables[RGB + "Mixed_5c/Branch_3/Conv3d_0b_1x1/batch_norm/beta"]
    with pytest.raises(KeyError, match="Mixed_5c/Branch_3/Conv3d_0b_1x1/batch_norm/beta"):
        module.load_tf1_variables(variables)
    variables = dict(rgb_vars)
    variables[RGB + "Mixed_3b/extra"] = np.zeros(3)
    with pytest.raises(ValueError, match="Mixed_3b/extra"):
        module.load_tf1_variables(variables)
    with pytest.raises(ValueError, match="Logits/Conv3d_0c_1x1"):
        module.load_tf1_variables(random_variables(num_classes=600))
    np.testing.assert_array_equal(w.numpy(), before)  # nothing assigned by failed loads

    module.load_tf1_variables(to_kinetics600_schema(rgb_vars))  # all schemas
    np.testing.assert_array_equal(w.numpy(), rgb_vars[RGB + "Conv3d_1a_7x7/conv_3d/w"])
    bn = module.Mixed_4d.branch_1.branch_b.batch_norm
    name = RGB + "Mixed_4d/Branch_1/Conv3d_0b_3x3/batch_norm/"
    np.testing.assert_array_equal(bn.moving_variance.value.numpy().ravel(),
                                  rgb_vars[name + "moving_variance"])
    np.testing.assert_array_equal(bn.offset.numpy(), rgb_vars[name + "beta"])
    np.testing.assert_array_equal(bn.scale.numpy(), 1.0)


# --------------------------------------------------------------------------
# TF2 object-based checkpoint names (kinetics-i3d PR #127 layout)


@needs_sonnet
def test_tf2_checkpoint_names_and_round_trip(rgb_vars, tmp_path):
    module = sonnet.SonnetI3D.from_tf1_variables(rgb_vars, dtype="float32")
    path = tf_checkpoint.save_tf2_checkpoint(module, str(tmp_path / "model.ckpt"))
    shapes = tf_checkpoint.tf2_checkpoint_shapes(path)
    suffix = "/.ATTRIBUTES/VARIABLE_VALUE"
    expected = {
        "model/Logits/logits/conv3d/w": (1, 1, 1, 1024, 400),
        "model/Logits/logits/conv3d/b": (400,),
        "model/Conv3d_1a_7x7/conv3d/w": (7, 7, 7, 3, 64),
        "model/Conv3d_1a_7x7/batch_norm/offset": (64,),
        "model/Conv3d_1a_7x7/batch_norm/scale": (64,),
        "model/Conv3d_1a_7x7/batch_norm/moving_mean/average": (1, 1, 1, 1, 64),
        "model/Conv3d_1a_7x7/batch_norm/moving_variance/_hidden": (1, 1, 1, 1, 64),
        "model/Conv3d_1a_7x7/batch_norm/moving_variance/_counter": (),
        "model/Mixed_5b/branch_2/branch_b/conv3d/w": (3, 3, 3, 32, 128),
        "model/Mixed_4f/branch_3/branch_b/conv3d/w": (1, 1, 1, 528, 128),
        "model/Logits/logits/batch_norm/moving_mean/_counter": (),
    }
    for name, shape in expected.items():
        assert shapes[name + suffix] == shape, name
    # 57 conv+BN units x 9 tensors + logits w, b + 2 counters of its unused BN + the object graph
    assert len(shapes) == 57 * 9 + 2 + 2 + 1
    assert not any("branch_3/branch_a" in n for n in shapes)

    fresh = sonnet.SonnetI3D()
    fresh.build(3, "float32")
    tf.train.Checkpoint(model=fresh).read(path).assert_consumed()
    clip = tf.constant(random_clip(SMALL), tf.float32)
    a = module(clip, final_endpoint="Mixed_4b")[0].numpy()
    b = fresh(clip, final_endpoint="Mixed_4b")[0].numpy()
    np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------
# Import order and GPU


def run_python(code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)


def test_import_i3d_convert_does_not_import_tensorflow():
    result = run_python("import sys, i3d_convert; print('tensorflow' in sys.modules)")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "False"


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is None, reason="torchvision is not installed")
def test_torchvision_and_timm_import_after_the_reference_imports_tensorflow():
    extra = "import timm\n" if importlib.util.find_spec("timm") is not None else ""
    code = ("import i3d_convert.reference.tf_runtime as r\nimport torchvision\n" + extra
            + "print(r.tf.reduce_sum(r.tf.ones([3])).numpy())\n")
    result = run_python(code)
    assert result.returncode == 0, f"rc={result.returncode}\n{result.stderr[-2000:]}"
    assert result.stdout.strip().splitlines()[-1] == "3.0"


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
def test_tensorflow_imported_first_warns_instead_of_crashing():
    """Preloading Triton after TensorFlow would itself segfault: the module must skip it and warn."""
    code = ("import warnings, tensorflow\n"
            "with warnings.catch_warnings(record=True) as caught:\n"
            "    warnings.simplefilter('always')\n"
            "    import i3d_convert.reference.tf_runtime\n"
            "print(any('before tensorflow' in str(w.message) for w in caught))\n")
    result = run_python(code)
    assert result.returncode == 0, f"rc={result.returncode}\n{result.stderr[-2000:]}"
    assert result.stdout.strip().splitlines()[-1] == "True"


@pytest.mark.skipif(not tf.config.list_physical_devices("GPU"), reason="TensorFlow sees no GPU")
def test_gpu_matches_cpu(rgb_vars):
    clip = random_clip((1, 9, 224, 224, 3), seed=10)
    cpu = forward.tf_forward(rgb_vars, clip, dtype="float64")
    gpu = forward.tf_forward(rgb_vars, clip, dtype="float64", device="gpu")
    gpu32 = forward.tf_forward(rgb_vars, clip, dtype="float32", device="gpu", allow_tf32=False)
    for name in cpu:
        assert rel_l2(gpu[name], cpu[name]) <= 1e-10, name
        assert rel_l2(gpu32[name], cpu[name]) <= 1e-4, name


def test_timm_registration_after_tensorflow_is_a_clear_error_not_a_crash():
    import subprocess
    import sys

    code = "import tensorflow, i3d_convert\ntry:\n    import i3d_convert.integrations.timm_models\nexcept ImportError as e:\n    print('refused:', e)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**__import__("os").environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "refused:" in proc.stdout and "before tensorflow" in proc.stdout


def test_tensorflow_reads_checkpoints_it_wrote_and_names_files_it_cannot(tmp_path):
    arrays = {"a/w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([1.5, -2.0], np.float64)}
    names = sorted(arrays)
    tf.raw_ops.SaveV2(prefix=str(tmp_path / "ck"), tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[tf.constant(arrays[n]) for n in names])
    for spelling in (tmp_path / "ck", str(tmp_path / "ck") + ".index"):
        got = tf_checkpoint.read_checkpoint_with_tensorflow(spelling)
        assert sorted(got) == names
        for name in names:
            assert got[name].dtype == arrays[name].dtype and np.array_equal(got[name], arrays[name]), name
    (tmp_path / "junk.index").write_bytes(b"not a table")
    with pytest.raises(CheckpointFormatError, match="junk"):
        tf_checkpoint.read_checkpoint_with_tensorflow(tmp_path / "junk")
