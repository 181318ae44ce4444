"""Parity of the converted PyTorch model with an independent TensorFlow forward pass.

The TensorFlow side (``i3d_convert.reference.tf_forward.tf_forward``: plain ``tf.nn``
ops, 'SAME' padding, eps 1e-3) reads the checkpoint with TensorFlow's own
reader; the PyTorch side reads it with ours and maps it. Checkpoints are seeded
synthetic ones with the exact names and shapes of the real releases and
batch-norm statistics calibrated from real activations.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest
import torch

from i3d_convert import InceptionI3d, convert
from i3d_convert import architecture as arch
from i3d_convert.verification.metrics import difference, ncthw_to_nthwc
from i3d_convert.weights.synthetic import random_clip
from i3d_convert.verification.tolerances import (
    FLOAT32_FLOOR_FACTOR,
    FLOAT32_LOGITS_ATOL,
    FLOAT32_REL_L2_MIN,
    FLOAT64_REL_L2,
)

from conftest import SCHEMA_RELEASES

CLIP_FRAMES = 16
CLIP_SIZE = 224


def _tf_variables(prefix) -> dict:
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(prefix))
    return {name: reader.get_tensor(name) for name, _ in tf.train.list_variables(str(prefix))}


@lru_cache(maxsize=None)
def _run_both(prefix_str: str, in_channels: int, num_classes: int):
    from i3d_convert.reference.tf_forward import tf_forward

    clip = random_clip((1, in_channels, CLIP_FRAMES, CLIP_SIZE, CLIP_SIZE), seed=11, dtype=torch.float64)
    state = convert(prefix_str)
    out = {}
    for dtype, torch_dtype in (("float64", torch.float64), ("float32", torch.float32)):
        model = InceptionI3d(num_classes, in_channels).eval().to(torch_dtype)
        model.load_state_dict(state, strict=True)
        with torch.inference_mode():
            torch_out = model.forward_endpoints(clip.to(torch_dtype))
        out[("torch", dtype)] = {k: ncthw_to_nthwc(v.double().numpy()) for k, v in torch_out.items()}
    variables = _tf_variables(prefix_str)
    nthwc = ncthw_to_nthwc(clip.numpy())
    for dtype in ("float64", "float32"):
        tf_out = tf_forward(variables, nthwc.astype(dtype), dtype=dtype)
        out[("tf", dtype)] = {k: np.asarray(v, dtype=np.float64) for k, v in tf_out.items()}
    return out


@pytest.mark.parametrize("release", SCHEMA_RELEASES)
def test_float64_every_endpoint_matches_tensorflow(release, synthetic_checkpoint):
    from i3d_convert.weights.releases import RELEASES

    rel = RELEASES[release]
    runs = _run_both(str(synthetic_checkpoint(release)), rel.in_channels, rel.num_classes)
    torch64, tf64 = runs[("torch", "float64")], runs[("tf", "float64")]
    print(f"\n{release} float64 (clip 1x{rel.in_channels}x{CLIP_FRAMES}x{CLIP_SIZE}x{CLIP_SIZE}):")
    worst = 0.0
    for name in arch.ENDPOINTS:
        assert torch64[name].shape == tf64[name].shape, name
        d = difference(torch64[name], tf64[name])
        print(f"  {name:18s} max|d| {d.max_abs:.3e}  rel L2 {d.rel_l2:.3e}")
        assert d.rel_l2 <= FLOAT64_REL_L2, (name, d)
        worst = max(worst, d.rel_l2)
    logits = tf64["Logits"]
    # Calibrated weights: logits are spread out (not collapsed), so the check has teeth.
    assert 0.5 < logits.std() < 50, logits.std()
    print(f"  worst rel L2 {worst:.3e}; logits std {logits.std():.3f}")


@pytest.mark.parametrize("release", SCHEMA_RELEASES)
def test_float32_within_tensorflows_own_round_off(release, synthetic_checkpoint):
    from i3d_convert.weights.releases import RELEASES

    rel = RELEASES[release]
    runs = _run_both(str(synthetic_checkpoint(release)), rel.in_channels, rel.num_classes)
    tf64, tf32, torch32 = runs[("tf", "float64")], runs[("tf", "float32")], runs[("torch", "float32")]
    print(f"\n{release} float32 vs TF float32 (floor = TF float32 vs TF float64):")
    for name in arch.ENDPOINTS:
        floor = difference(tf32[name], tf64[name]).rel_l2
        d = difference(torch32[name], tf32[name])
        allowed = max(FLOAT32_FLOOR_FACTOR * floor, FLOAT32_REL_L2_MIN)
        print(f"  {name:18s} rel L2 {d.rel_l2:.3e}  floor {floor:.3e}  max|d| {d.max_abs:.3e}")
        assert d.rel_l2 <= allowed, (name, d, floor)
    d_logits = difference(torch32["Logits"], tf32["Logits"])
    assert d_logits.max_abs <= FLOAT32_LOGITS_ATOL
    assert int(np.argmax(torch32["Logits"])) == int(np.argmax(tf64["Logits"]))


def test_wrong_batch_norm_eps_is_caught_by_the_float64_check(synthetic_checkpoint):
    """The check has teeth: eps 1e-5 (the FVD ports' setting) is orders of magnitude outside tolerance."""
    from i3d_convert.weights.releases import RELEASES

    release = "rgb_imagenet"
    rel = RELEASES[release]
    runs = _run_both(str(synthetic_checkpoint(release)), rel.in_channels, rel.num_classes)
    model = InceptionI3d(bn_eps=1e-5).eval().double()
    model.load_state_dict(convert(synthetic_checkpoint(release)), strict=True)
    clip = random_clip((1, 3, CLIP_FRAMES, CLIP_SIZE, CLIP_SIZE), seed=11, dtype=torch.float64)
    with torch.inference_mode():
        logits = model(clip).numpy()
    d = difference(logits, runs[("tf", "float64")]["Logits"])
    print(f"\neps 1e-5 instead of 1e-3: logits rel L2 {d.rel_l2:.3e}")
    assert d.rel_l2 > 1e3 * FLOAT64_REL_L2
