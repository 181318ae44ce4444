"""Test helper: TF-GAN's ``classifier_metrics`` module, loaded without ``tensorflow_gan/__init__``.

``tensorflow_gan/__init__`` imports its estimator code, which needs ``tf.estimator`` (gone in
TensorFlow >= 2.16). ``classifier_metrics`` itself needs only TensorFlow, TensorFlow Probability
and its sibling ``eval_utils``. Empty stand-ins for the three parent packages, whose ``__path__``
points at the installed folders, let the import system find the submodule files without running
those ``__init__`` files; the stand-ins are removed again afterwards.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types

import pytest
import torch  # noqa: F401  (import order: torch before TensorFlow, see conftest)

_PARENTS = ("tensorflow_gan", "tensorflow_gan.python", "tensorflow_gan.python.eval")
_cache = {}


def classifier_metrics():
    """TF-GAN's ``classifier_metrics`` module (pytest-skips when tensorflow-gan or TFP is missing)."""
    if "module" in _cache:
        return _cache["module"]
    spec = importlib.util.find_spec("tensorflow_gan")
    if spec is None or not spec.submodule_search_locations or importlib.util.find_spec("tensorflow_probability") is None:
        pytest.skip("tensorflow-gan / tensorflow-probability not installed (the [tf] extra)")
    root = list(spec.submodule_search_locations)[0]
    paths = dict(zip(_PARENTS, (root, os.path.join(root, "python"), os.path.join(root, "python", "eval"))))
    before = set(sys.modules)
    for name in _PARENTS:
        if name not in sys.modules:
            stub = types.ModuleType(name)
            stub.__path__ = [paths[name]]
            stub.__package__ = name
            sys.modules[name] = stub
    try:
        module = importlib.import_module("tensorflow_gan.python.eval.classifier_metrics")
    finally:
        for name in [n for n in sys.modules if n.startswith("tensorflow_gan") and n not in before]:
            del sys.modules[name]
    _cache["module"] = module
    return module


def tfgan_fid(activations1, activations2):
    """TF-GAN's ``frechet_classifier_distance_from_activations`` evaluated eagerly, as numpy."""
    import tensorflow as tf

    module = classifier_metrics()
    return module.frechet_classifier_distance_from_activations(tf.constant(activations1), tf.constant(activations2)).numpy()
