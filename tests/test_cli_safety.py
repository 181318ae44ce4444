"""Every command that writes refuses bad outputs in one line, writes nothing; NaN weights are refused.

Bad outputs: a folder that cannot be written (``/sys`` refuses new files even to
root), an output whose folder is a file, an output that is a folder, and an
output that would overwrite one of the command's own inputs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import KINETICS_FIXTURES, cli_runner


@pytest.fixture(scope="module")
def files(tmp_path_factory, synthetic_checkpoint) -> dict:
    from i3d_convert.conversion.tf_to_torch import convert_to_file

    root = tmp_path_factory.mktemp("inputs")
    weights = root / "w.safetensors"
    convert_to_file(synthetic_checkpoint("rgb_imagenet"), weights)
    clip = root / "clip.npy"
    np.save(clip, np.zeros((12, 64, 64, 3), np.float32))
    state = root / "m.index"  # a state_dict whose name is what torch-to-tf -o ROOT/m would write
    state.write_bytes(weights.read_bytes())
    (root / "a-file").write_text("not a folder")
    return {"root": root, "ckpt": synthetic_checkpoint("rgb_imagenet"), "weights": weights, "clip": clip,
            "state": state}


def _commands(f: dict, out: Path):
    """(program, argv) of every command that writes, writing to ``out``."""
    return {
        "tf-to-torch": ("convert", ["tf-to-torch", f["ckpt"], "-o", out.with_suffix(".safetensors"), "--overwrite"]),
        "tf-to-torch .pt": ("convert", ["tf-to-torch", f["ckpt"], "-o", out.with_suffix(".pt"), "--overwrite"]),
        "torch-to-tf": ("convert", ["torch-to-tf", f["weights"], "-o", out, "--overwrite"]),
        "features": ("convert", ["features", f["clip"], "-o", out.with_suffix(".npy"), "--weights", f["weights"],
                                 "--window", "8", "--overwrite", "-q"]),
        "i3d-inflate": ("inflate", [f["weights"], "-o", out.with_suffix(".safetensors"), "--overwrite"]),
        "verify --json": ("convert", ["verify", f["ckpt"], "--json", out.with_suffix(".json")]),
        "verify --plot": ("convert", ["verify", f["ckpt"], "--plot", out.with_suffix(".png")]),
        "demo --workdir": ("convert", ["demo", "--workdir", out]),
    }


@pytest.fixture
def run(capsys):
    from i3d_convert.cli.app import main as convert_main
    from i3d_convert.cli.inflate import main as inflate_main

    runners = {"convert": cli_runner(convert_main, capsys), "inflate": cli_runner(inflate_main, capsys)}
    return lambda prog, argv: runners[prog](*argv)


def _assert_one_line_error(code, stderr, *phrases):
    lines = stderr.strip().splitlines()
    assert code == 1 and len(lines) == 1, stderr
    assert "error: " in lines[0] and "Traceback" not in stderr
    for phrase in phrases:
        assert phrase in lines[0], lines[0]


@pytest.mark.parametrize("command", list(_commands({k: Path("x") for k in ("ckpt", "weights", "clip")}, Path("o"))))
@pytest.mark.parametrize("where", ["unwritable folder", "folder is a file"])
def test_unwritable_output_is_one_line_and_nothing_written(command, where, files, run):
    if where == "unwritable folder":
        if not Path("/sys").is_dir():
            pytest.skip("needs Linux's /sys, a folder no one (root included) can create files in")
        out, phrase = Path("/sys/i3d-convert-test-output"), "/sys"
    else:
        out, phrase = files["root"] / "a-file" / "out", str(files["root"] / "a-file")
    before = sorted(files["root"].rglob("*"))
    code, _, stderr = run(*_commands(files, out)[command])
    _assert_one_line_error(code, stderr, phrase)
    assert sorted(files["root"].rglob("*")) == before


@pytest.mark.parametrize("command", ["tf-to-torch", "tf-to-torch .pt", "features", "i3d-inflate", "verify --json",
                                     "verify --plot"])
def test_output_that_is_a_folder_is_one_line_and_nothing_written(command, files, run, tmp_path):
    folder = tmp_path / "folder"
    suffix = {"features": ".npy", "verify --json": ".json", "verify --plot": ".png", "tf-to-torch .pt": ".pt"}
    folder.with_suffix(suffix.get(command, ".safetensors")).mkdir()
    code, _, stderr = run(*_commands(files, folder)[command])
    _assert_one_line_error(code, stderr, "is a folder")
    assert [p.name for p in tmp_path.iterdir()] == [folder.with_suffix(suffix.get(command, ".safetensors")).name]


def test_demo_workdir_that_is_a_file_is_one_line(files, run):
    code, _, stderr = run("convert", ["demo", "--workdir", files["root"] / "a-file"])
    _assert_one_line_error(code, stderr, "not a folder")


@pytest.mark.parametrize("command", ["tf-to-torch", "torch-to-tf", "features", "i3d-inflate", "verify --json"])
def test_output_that_would_overwrite_an_input_is_refused(command, files, run):
    root = files["root"]
    argv = {
        "tf-to-torch": ("convert", ["tf-to-torch", files["ckpt"], "-o", Path(f"{files['ckpt']}.index"), "--overwrite"]),
        "torch-to-tf": ("convert", ["torch-to-tf", files["state"], "-o", root / "m", "--overwrite"]),
        "features": ("convert", ["features", files["clip"], "-o", files["clip"], "--weights", files["weights"],
                                 "--overwrite"]),
        "i3d-inflate": ("inflate", [files["weights"], "-o", files["weights"], "--overwrite"]),
        "verify --json": ("convert", ["verify", files["ckpt"], "--json", Path(f"{files['ckpt']}.index")]),
    }[command]
    sizes = {p: p.stat().st_size for p in list(root.iterdir()) + list(files["ckpt"].parent.iterdir()) if p.is_file()}
    code, _, stderr = run(*argv)
    _assert_one_line_error(code, stderr, "own inputs")
    assert {p: p.stat().st_size for p in sizes} == sizes


# --------------------------------------------------------------------------- non-finite weights


@pytest.fixture(scope="module")
def nan_weights(files) -> Path:
    from i3d_convert.conversion.tf_to_torch import save_state_dict
    from i3d_convert.conversion.sources import load_state_dict_file

    state = load_state_dict_file(files["weights"])
    state["Mixed_4d.Branch_0.Conv3d_0a_1x1.conv.weight"][0, 0, 0, 0, 0] = float("nan")
    path = files["root"] / "nan.safetensors"
    save_state_dict(state, path)
    return path


@pytest.fixture(scope="module")
def nan_googlenet(files) -> Path:
    import torchvision

    from i3d_convert.conversion.tf_to_torch import save_state_dict

    state = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True).state_dict()
    state["conv1.conv.weight"][0, 0, 0, 0] = float("inf")
    path = files["root"] / "googlenet-inf.pth"
    torch.save(state, path)
    return path


def _non_finite_commands(f: dict, nan: Path, googlenet: Path, out: Path):
    gif = KINETICS_FIXTURES / "v_CricketShot_g04_c01_rgb.gif"
    return {
        "torch-to-tf": ("convert", ["torch-to-tf", nan, "-o", out / "model.ckpt"], out / "model.ckpt.index"),
        "features": ("convert", ["features", f["clip"], "-o", out / "f.npy", "--weights", nan, "--window", "12",
                                 "-q"], out / "f.npy"),
        "i3d-inflate": ("inflate", [googlenet, "-o", out / "i.safetensors"], out / "i.safetensors"),
        "evaluate-sample": ("convert", ["evaluate-sample", "--weights", nan, "--gif", gif, "--frames", "10"], None),
        "verify": ("convert", ["verify", "--torch", nan, f["ckpt"], "--json", out / "r.json"], out / "r.json"),
    }


@pytest.mark.parametrize("command", ["torch-to-tf", "features", "i3d-inflate", "evaluate-sample", "verify"])
def test_non_finite_weights_are_refused_by_default(command, files, nan_weights, nan_googlenet, run, tmp_path):
    prog, argv, output = _non_finite_commands(files, nan_weights, nan_googlenet, tmp_path)[command]
    code, _, stderr = run(prog, argv)
    _assert_one_line_error(code, stderr, "NaN/inf", "--allow-non-finite")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["torch-to-tf", "features", "i3d-inflate", "evaluate-sample"])
def test_allow_non_finite_runs_with_a_warning(command, files, nan_weights, nan_googlenet, run, tmp_path):
    prog, argv, output = _non_finite_commands(files, nan_weights, nan_googlenet, tmp_path)[command]
    code, stdout, stderr = run(prog, argv + ["--allow-non-finite"])
    assert code == 0, stderr
    assert "warning: " in stderr and "NaN/inf" in stderr
    assert output is None or output.is_file()
    if command == "features":
        assert np.isnan(np.load(output)).all()


def test_clip_shorter_than_the_window_is_an_error_naming_both_lengths(files, run, tmp_path):
    short = tmp_path / "short.npy"
    np.save(short, np.zeros((3, 64, 64, 3), np.float32))
    code, _, stderr = run("convert", ["features", short, "-o", tmp_path / "f.npy", "--weights", files["weights"]])
    _assert_one_line_error(code, stderr, "3 frames", "window of 64", "1 to 3 frames")
    assert not (tmp_path / "f.npy").exists()
