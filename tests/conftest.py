"""Shared fixtures.

torch (and torchvision, if installed) are imported before anything can import
TensorFlow: with torch 2.14.1 / torchvision 0.29.1 / TensorFlow 2.21, importing
TensorFlow first and torchvision later segfaults the process.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Dict

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter out of test logs

import torch  # noqa: F401,E402  (import order: see the module docstring)

try:
    import torchvision  # noqa: F401
except ImportError:  # pragma: no cover
    pass

REPO_ROOT = Path(__file__).resolve().parents[1]
#: Fixtures beside the clone (``../shared/fixtures``; CI has them). ``I3D_SHARED_FIXTURES`` points elsewhere
#: (e.g. a missing folder, to see what a fresh clone without them runs).
SHARED_FIXTURES = Path(os.environ.get("I3D_SHARED_FIXTURES", REPO_ROOT.parent / "shared" / "fixtures"))
#: DeepMind's sample GIFs and published reference outputs, vendored (Apache-2.0, LICENSE beside them).
KINETICS_FIXTURES = REPO_ROOT / "tests" / "data" / "kinetics-i3d"
#: Tensor tables of the 2D Inception-v1 checkpoints: NOT vendored (their README asks not to copy them).
INCEPTION_FIXTURES = SHARED_FIXTURES / "inception-v1"

#: The three checkpoint schemas: RGB (3 ch, 400, RGB/ scope), Flow (2 ch, 400,
#: Flow/ scope), Kinetics-600 (3 ch, 600, no scope, [1,1,1,1,C] batch norms, Momentum slots).
SCHEMA_RELEASES = ("rgb_imagenet", "flow_imagenet", "rgb_scratch_kin600")


def requires_shared(path: Path) -> None:
    """Skip unless ``path`` exists. Vendored files always do; only the inception-v1 tables can be missing."""
    if path.exists():
        return
    if KINETICS_FIXTURES in path.parents or path == KINETICS_FIXTURES:
        pytest.fail(f"vendored test data {path} is missing from the clone")
    pytest.skip(f"{path} is absent: the inception-v1 tensor tables are not shipped with the project (their "
                f"README asks not to copy them); they are read from ../shared/fixtures beside the clone, "
                f"which CI provides (or set I3D_SHARED_FIXTURES)")


def key_without_code_path(settings) -> str:
    """A FeatureSettings' key without ``tvl1_path`` (the OpenCV code path flow outputs record since
    the portable path), to compare with keys computed before that field existed."""
    import hashlib
    import json

    record = {k: v for k, v in settings.describe().items() if k not in ("batch_size", "tvl1_path")}
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


@pytest.fixture(scope="session")
def synthetic_checkpoint(tmp_path_factory) -> Callable[[str], Path]:
    """``synthetic_checkpoint(release, seed=0)`` -> prefix of a calibrated synthetic checkpoint (cached)."""
    from i3d_convert.weights.synthetic import write_synthetic_checkpoint

    cache: Dict[tuple, Path] = {}
    root = tmp_path_factory.mktemp("synthetic")

    def make(release: str = "rgb_imagenet", seed: int = 0) -> Path:
        key = (release, seed)
        if key not in cache:
            cache[key] = write_synthetic_checkpoint(root / f"{release}-{seed}", release, seed)
        return cache[key]

    return make


@pytest.fixture(scope="session")
def converted_weights(synthetic_checkpoint, tmp_path_factory) -> Callable[[str], Path]:
    """``converted_weights(release)`` -> that release's synthetic checkpoint converted to ``.safetensors`` (cached)."""
    from i3d_convert.conversion.tf_to_torch import convert_to_file

    cache: Dict[str, Path] = {}

    def make(release: str = "rgb_imagenet") -> Path:
        if release not in cache:
            cache[release] = tmp_path_factory.mktemp("converted") / f"{release}.safetensors"
            convert_to_file(synthetic_checkpoint(release), cache[release])
        return cache[release]

    return make


def cli_runner(main, capsys):
    """Run a console script's ``main`` in-process: returns (exit code, stdout, stderr)."""

    def run(*args: str):
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


@pytest.fixture
def cli(capsys):
    """``i3d-convert`` in-process: returns (exit code, stdout, stderr)."""
    from i3d_convert.cli.app import main

    return cli_runner(main, capsys)
