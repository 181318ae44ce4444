"""Piped CLI output is never wrapped or cut; help shows flags as flags; interrupts print one line.

The commands run in subprocesses with stdout a pipe (not a terminal), with
``COLUMNS`` unset and with ``COLUMNS=40``, under a temporary folder whose path
is far longer than 80 characters.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO_ROOT

LAUNCH = "import sys, i3d_convert_launcher as l; l.i3d_convert() if sys.argv.pop(1) == 'convert' else l.i3d_inflate()"
COMMANDS = ("tf-to-torch", "info", "download", "demo", "verify", "evaluate-sample", "torch-to-tf", "features")


def run_cli(args, cwd: Path, columns=None, prog="convert", timeout=600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    env["PYTHONPATH"] = str(REPO_ROOT)
    if columns is not None:
        env["COLUMNS"] = str(columns)
    return subprocess.run([sys.executable, "-c", LAUNCH, prog, *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def long_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("out") / ("a-folder-name-long-enough-to-be-wrapped-" * 3) / "and-deeper-still"
    folder.mkdir(parents=True)
    assert len(str(folder)) > 120
    return folder


@pytest.mark.parametrize("columns", [None, 40])
def test_piped_tf_to_torch_and_info_keep_long_paths_and_names_on_one_line(columns, long_dir, synthetic_checkpoint):
    out = long_dir / f"converted-{columns}.safetensors"
    result = run_cli(["tf-to-torch", synthetic_checkpoint("rgb_imagenet"), "-o", out], long_dir, columns)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"wrote {out}: 230 tensors (native layout)"), result.stdout
    result = run_cli(["info", synthetic_checkpoint("rgb_imagenet")], long_dir, columns)
    assert result.returncode == 0, result.stderr
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert rows[0] == [f"{synthetic_checkpoint('rgb_imagenet')}: 230 variables, scope 'RGB/inception_i3d/'"]
    assert rows[1] == ["TF variable", "dtype", "shape", "state_dict key", "torch shape"]
    by_name = {row[0]: row for row in rows[2:]}
    assert len(by_name) == 230 and all(len(row) == 5 for row in rows[1:])
    assert by_name["RGB/inception_i3d/Mixed_5c/Branch_3/Conv3d_0b_1x1/batch_norm/moving_variance"][3] == \
        "Mixed_5c.Branch_3.Conv3d_0b_1x1.bn.running_var"


def test_piped_demo_and_inflate_outputs_are_unwrapped_with_40_columns(long_dir):
    workdir = long_dir / "demo"
    result = run_cli(["demo", "--workdir", workdir, "--frames", "8"], long_dir, 40)
    assert result.returncode == 1 and result.stderr.count("\n") == 1 and "at least 9 frames" in result.stderr
    assert not workdir.exists()
    result = run_cli(["demo", "--workdir", workdir, "--frames", "9"], long_dir, 40)
    assert result.returncode == 0, result.stderr
    assert f"-> {workdir / 'rgb_imagenet.safetensors'} (" in result.stdout
    assert result.stdout.count("\n") == 9, result.stdout  # 3 steps, the top-5 heading and 5 classes
    assert (workdir / "rgb_imagenet.safetensors").is_file()


@pytest.mark.parametrize("command", COMMANDS)
def test_help_shows_flags_without_bool_metavar_and_cuts_nothing(command, tmp_path):
    result = run_cli([command, "--help"], tmp_path, 40)
    assert result.returncode == 0, result.stderr
    assert "<bool>" not in result.stdout and "…" not in result.stdout
    assert "--help" in result.stdout
    if command == "evaluate-sample":
        assert "--imagenet-pretrained / --no-imagenet-pretrained" in result.stdout
        assert "--allow-non-finite" in result.stdout


def test_inflate_help_shows_flags_without_bool_metavar(tmp_path):
    result = run_cli(["--help"], tmp_path, 40, prog="inflate")
    assert result.returncode == 0 and "<bool>" not in result.stdout and "--reinit-logits" in result.stdout


def _handles_sigterm(pid: int) -> bool:
    """Whether the process has installed a SIGTERM handler (Python itself never does: the launcher does)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), 16)
    return bool(caught >> (signal.SIGTERM - 1) & 1)


def _interrupt(args, cwd: Path, signum: int, after: float):
    """Run the console script, wait until its launcher has taken over the signals (the interpreter's
    own start before that is Python's), then ``after`` seconds more, and send ``signum``."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    proc = subprocess.Popen([sys.executable, "-c", LAUNCH, "convert", *map(str, args)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not _handles_sigterm(proc.pid) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(after)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=120)
    return proc.returncode, stderr


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_during_start_up_is_one_line_and_exit_128_plus_signal(signum, tmp_path):
    code, stderr = _interrupt(["tf-to-torch", tmp_path / "x", "-o", tmp_path / "y.safetensors"], tmp_path, signum, 0.05)
    assert code == 128 + signum, stderr
    assert stderr.strip().splitlines() == ["i3d-convert: interrupted; nothing written"], stderr
    assert not (tmp_path / "y.safetensors").exists()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_during_a_long_verify_is_one_line_and_writes_no_report(signum, tmp_path):
    report = tmp_path / "report.json"
    env_ready = 12.0  # past the imports: torch, the synthetic checkpoint and TensorFlow are being run
    code, stderr = _interrupt(["verify", "--json", report, "--frames", "64"], tmp_path, signum, env_ready)
    assert code == 128 + signum, stderr
    lines = stderr.strip().splitlines()
    assert lines == ["i3d-convert: interrupted; nothing written"], stderr
    assert "Traceback" not in stderr and not report.exists()
    assert [p for p in tmp_path.iterdir()] == []
