"""Every option of ``i3d-convert`` and ``i3d-inflate`` is passed by at least one test, with an observable effect.

The first test walks the commands' click trees (so a new option without a test fails it); the others pass
the options no other test passed, each asserting what the option changes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import KINETICS_FIXTURES, REPO_ROOT, cli_runner

#: Options still without a test (features' dataset runs and the FVD commands: their tests belong with
#: tests/test_dataset_features.py and tests/test_fvd_metric.py). Written without quotes around the flags, so
#: this list does not count as passing them; it may only shrink.
NOT_YET_TESTED: set = set()


def _long_options(command, path):
    """``(command path, long option)`` for every option of ``command`` and its subcommands."""
    for param in command.params:
        if getattr(param, "param_type_name", "") == "option":
            for opt in list(param.opts) + list(param.secondary_opts):
                if opt.startswith("--"):
                    yield " ".join(path), opt
    for name, sub in (getattr(command, "commands", None) or {}).items():
        yield from _long_options(sub, path + [name])


def test_every_cli_option_is_passed_by_some_test():
    import typer

    from i3d_convert.cli.app import app
    from i3d_convert.cli.inflate import app as inflate_app

    texts = [p.read_text() for p in sorted((REPO_ROOT / "tests").glob("*.py"))]
    uncovered = []
    for prog, cli_app in (("i3d-convert", app), ("i3d-inflate", inflate_app)):
        for where, opt in _long_options(typer.main.get_command(cli_app), [prog]):
            quoted = re.compile(r"[\"']" + re.escape(opt) + r"[\"'=]")  # passed as an argument, not mentioned
            if not any(quoted.search(text) for text in texts):
                uncovered.append(f"{where} {opt}".replace("i3d-convert ", "", 1))
    new = sorted(set(uncovered) - NOT_YET_TESTED)
    assert not new, "options no test passes: " + ", ".join(new)
    assert not NOT_YET_TESTED - set(uncovered), "now tested; drop from NOT_YET_TESTED: " + ", ".join(
        sorted(NOT_YET_TESTED - set(uncovered)))


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture
def run(capsys):
    from i3d_convert.cli.app import main as convert_main
    from i3d_convert.cli.inflate import main as inflate_main

    runners = {"convert": cli_runner(convert_main, capsys), "inflate": cli_runner(inflate_main, capsys)}
    return lambda prog, *argv: runners[prog](*argv)


@pytest.fixture(scope="module")
def weights(converted_weights) -> Path:
    return converted_weights("rgb_imagenet")


@pytest.fixture(scope="module")
def googlenet(tmp_path_factory) -> Path:
    import torchvision

    path = tmp_path_factory.mktemp("googlenet") / "googlenet.pth"
    torch.manual_seed(0)
    torch.save(torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True).state_dict(), path)
    return path


# ----------------------------------------------------------------------------- global and output options


def test_debug_shows_the_traceback_instead_of_one_line(run, tmp_path):
    from i3d_convert.errors import I3DConvertError

    missing = tmp_path / "missing" / "model.ckpt"
    code, _, stderr = run("convert", "tf-to-torch", missing, "--output", tmp_path / "o.safetensors")
    assert code == 1 and len(stderr.strip().splitlines()) == 1 and str(missing) in stderr
    with pytest.raises(I3DConvertError):  # --debug: the exception itself, so the traceback shows
        run("convert", "--debug", "tf-to-torch", missing, "--output", tmp_path / "o.safetensors")
    with pytest.raises(I3DConvertError):
        run("inflate", tmp_path / "missing.pth", "--output", tmp_path / "o.safetensors", "--debug")


def test_tf_to_torch_format_pt_writes_a_torch_file_whatever_the_suffix(run, synthetic_checkpoint, tmp_path):
    out = tmp_path / "weights.bin"
    code, _, stderr = run("convert", "tf-to-torch", synthetic_checkpoint("rgb_imagenet"), "--output", out,
                          "--format", "pt", "--no-allow-non-finite", "-q")
    assert code == 0, stderr
    state = torch.load(out, weights_only=True)
    assert state["Conv3d_1a_7x7.conv.weight"].shape == (64, 3, 7, 7, 7)
    assert not out.read_bytes().startswith(b"\x00")  # not a safetensors header (8-byte little-endian length)


def test_torch_to_tf_bn_5d_writes_five_dimensional_batch_norm_tensors(run, weights, tmp_path):
    from i3d_convert.io.checkpoint_reader import load_tf_checkpoint

    name = "RGB/inception_i3d/Mixed_3b/Branch_0/Conv3d_0a_1x1/batch_norm/moving_mean"
    shapes = {}
    for flag in ("--bn-5d", "--no-allow-non-finite"):
        prefix = tmp_path / flag.strip("-") / "model.ckpt"
        prefix.parent.mkdir()
        code, _, stderr = run("convert", "torch-to-tf", weights, "--output", prefix, flag, "-q")
        assert code == 0, stderr
        shapes[flag] = load_tf_checkpoint(prefix)[name].shape
    assert shapes == {"--bn-5d": (1, 1, 1, 1, 64), "--no-allow-non-finite": (64,)}


def test_no_allow_non_finite_refuses_nan_weights(run, weights, tmp_path):
    from i3d_convert.conversion.tf_to_torch import save_state_dict
    from i3d_convert.conversion.sources import load_state_dict_file

    state = load_state_dict_file(weights)
    state["Logits.Conv3d_0c_1x1.conv.bias"][0] = float("nan")
    nan = tmp_path / "nan.safetensors"
    save_state_dict(state, nan)
    (tmp_path / "out").mkdir()
    code, _, stderr = run("convert", "torch-to-tf", nan, "-o", tmp_path / "out" / "model.ckpt",
                          "--allow-non-finite", "--no-allow-non-finite")  # the last one given wins
    assert code == 1 and "pass --allow-non-finite" in stderr and "allow_non_finite=" not in stderr
    assert list((tmp_path / "out").iterdir()) == []


# ----------------------------------------------------------------------------- i3d-inflate


def test_inflate_seed_and_reinit_logits_choose_the_logits(run, googlenet, tmp_path):
    def logits(*argv):
        out = tmp_path / f"{len(list(tmp_path.iterdir()))}.pt"
        code, _, stderr = run("inflate", googlenet, "--output", out, "--format", "pt", "-q", *argv)
        assert code == 0, stderr
        return torch.load(out, weights_only=True)["Logits.Conv3d_0c_1x1.conv.weight"]

    kept = logits("--no-allow-non-finite")
    seed_1, seed_1_again, seed_2 = (logits("--reinit-logits", "--seed", s) for s in ("1", "1", "2"))
    assert torch.equal(kept[:, :, 0, 0, 0], torch.load(googlenet, weights_only=True)["fc.weight"])
    assert torch.equal(seed_1, seed_1_again) and not torch.equal(seed_1, seed_2) and not torch.equal(seed_1, kept)
    assert torch.equal(logits("--seed", "2"), kept)  # the seed is for a re-initialised head only


# ----------------------------------------------------------------------------- demo


def test_demo_release_and_seed_choose_the_synthetic_checkpoint(run, tmp_path):
    from i3d_convert.conversion.sources import load_state_dict_file

    stems = {}
    for release, seed in (("flow_imagenet", "3"), ("flow_imagenet", "4")):
        workdir = tmp_path / seed
        code, stdout, stderr = run("convert", "demo", "--release", release, "--seed", seed, "--frames", "9",
                                   "--workdir", workdir)
        assert code == 0, stderr
        stems[seed] = load_state_dict_file(workdir / f"{release}.safetensors")["Conv3d_1a_7x7.conv.weight"]
    assert stems["3"].shape[1] == 2  # flow: two input channels
    assert not torch.equal(stems["3"], stems["4"])


# ----------------------------------------------------------------------------- verify


def test_verify_seed_tolerances_and_device_options(run, tmp_path):
    passed, failed = tmp_path / "pass.json", tmp_path / "fail.json"
    code, _, stderr = run("convert", "verify", "--frames", "9", "--seed", "1", "--tf-device", "cpu", "--allow-tf32",
                          "--tf-bn-eps", "0.001", "--atol", "1", "--rtol", "1", "--no-allow-non-finite", "--json",
                          passed, "-q")
    assert code == 0, stderr
    code, stdout, _ = run("convert", "verify", "--frames", "9", "--seed", "2", "--rtol", "1e-30", "--json", failed, "-q")
    assert code == 1 and stdout.startswith("FAIL")  # no relative error is allowed: float32 has some
    a, b = json.loads(passed.read_text()), json.loads(failed.read_text())
    assert a["input"]["sha256"] != b["input"]["sha256"]  # --seed changes the random clip
    assert (a["settings"]["atol"], a["settings"]["rtol"], b["settings"]["rtol"]) == (1.0, 1.0, 1e-30)
    assert a["settings"]["bn_eps_tensorflow"] == 0.001
    assert (a["settings"]["allow_tf32"], b["settings"]["allow_tf32"]) == (True, False)
    assert "CPU" in a["devices"]["tensorflow"].upper()


def test_verify_atol_decides_a_borderline_logits_comparison(run, tmp_path):
    report = tmp_path / "r.json"
    code, _, _ = run("convert", "verify", "--frames", "9", "--json", report, "-q")
    logits = next(r for r in json.loads(report.read_text())["rows"] if r["name"] == "Logits")
    max_abs = logits["max_abs"]
    assert code == 0 and max_abs > 0
    code, stdout, _ = run("convert", "verify", "--frames", "9", "--atol", f"{max_abs / 2:.3e}", "-q")
    assert code == 1 and "Logits" in stdout
    code, stdout, _ = run("convert", "verify", "--frames", "9", "--atol", f"{max_abs * 2:.3e}", "-q")
    assert code == 0 and stdout.strip() == "PASS"


# ----------------------------------------------------------------------------- evaluate-sample


def test_evaluate_sample_checkpoint_dir_finds_the_converted_release(run, weights, tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    (folder / "rgb_imagenet.safetensors").write_bytes(weights.read_bytes())
    gif = KINETICS_FIXTURES / "v_CricketShot_g04_c01_rgb.gif"
    code, stdout, stderr = run("convert", "evaluate-sample", "--eval-type", "rgb", "--checkpoint-dir", folder,
                               "--gif", gif, "--frames", "10", "--top-k", "3", "--no-allow-non-finite", "--json")
    assert code == 0, stderr
    result = json.loads(stdout)
    assert result["checkpoints"] == {"rgb": str(folder / "rgb_imagenet.safetensors")}
    assert len(result["top"]) == 3 and result["frames"] == {"rgb": 10}


def test_evaluate_sample_does_not_import_tensorflow(tmp_path, weights):
    import subprocess
    import sys

    gif = KINETICS_FIXTURES / "v_CricketShot_g04_c01_rgb.gif"
    script = ("import sys\nfrom i3d_convert.cli.app import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n"
              "    assert not e.code, e.code\nprint('tensorflow' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", script, "evaluate-sample", "--weights", str(weights), "--gif", str(gif),
                           "--frames", "10", "--top-k", "1", "-q"], capture_output=True, text=True, cwd=tmp_path,
                          env={**__import__("os").environ, "PYTHONPATH": str(REPO_ROOT)}, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False"
    assert "cuInit" not in done.stderr and "oneDNN" not in done.stderr


# ----------------------------------------------------------------------------- features


def test_features_release_without_network_is_a_one_line_error_naming_it(run, tmp_path, monkeypatch):
    monkeypatch.setenv("I3D_CONVERT_CACHE", str(tmp_path / "cache"))
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    for name in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # the discard port: refused at once, no network used
    clip = tmp_path / "clip.npy"
    np.save(clip, np.zeros((10, 64, 64, 3), np.float32))
    code, _, stderr = run("convert", "features", clip, "--output", tmp_path / "f.npy", "--release", "flow_imagenet",
                          "--window", "10", "-q")
    assert code == 1 and len(stderr.strip().splitlines()) == 1, stderr
    assert "flow_imagenet" in stderr and "i3d-convert download flow_imagenet" in stderr
    assert not (tmp_path / "f.npy").exists()
