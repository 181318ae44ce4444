"""``i3d-convert verify``: per-endpoint parity PyTorch vs TensorFlow, its tolerances, its failure reports and audits.

Checkpoints are the seeded calibrated synthetic ones of the three schemas
(``conftest.SCHEMA_RELEASES``). Most checks use 9 frames of 224x224, the
smallest clip with Logits, to stay quick on 2 cores; the one-command demo runs
at its default 16 frames. TensorFlow results for identical weights, clip and
settings are shared between tests through ``verify(cache=...)``; the audits
run in float32, whose TensorFlow runs (float32 and the float64 floor) the
parity tests have already made.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from i3d_convert import architecture as arch
from i3d_convert.errors import I3DConvertError
from i3d_convert.verification.tolerances import FLOAT32_FLOOR_FACTOR, FLOAT32_LOGITS_ATOL, FLOAT32_REL_L2_MIN, FLOAT64_REL_L2

from conftest import KINETICS_FIXTURES, REPO_ROOT, SCHEMA_RELEASES

# TensorFlow is imported only through i3d_convert.reference.tf_runtime (torchvision first), never directly here.
if importlib.util.find_spec("tensorflow") is None:  # pragma: no cover
    pytest.skip("TensorFlow is not installed (the [tf] extra)", allow_module_level=True)

#: The smallest clip length whose Mixed_5c has the two time steps the Logits pool needs.
FRAMES = arch.MIN_LOGITS_FRAMES
#: The acceptance budget of the one-command demo on a 2-core machine.
DEMO_SECONDS = 60
#: A perturbation of one converted kernel by this factor must be caught in float64.
PERTURBATION = 1.0 + 1e-6
PERTURBED_UNIT = "Mixed_4c.Branch_2.Conv3d_0b_3x3.conv.weight"


@pytest.fixture(scope="module")
def tf_cache():
    return {}


@pytest.fixture(scope="module")
def rgb64(synthetic_checkpoint, tf_cache):
    from i3d_convert.verification.verify import verify

    return verify(synthetic_checkpoint("rgb_imagenet"), dtype="float64", frames=FRAMES, cache=tf_cache)


@pytest.fixture
def cached_cli(cli, monkeypatch, tf_cache):
    """The in-process CLI with ``verify`` sharing this module's TensorFlow cache (same numbers, less time)."""
    import functools

    import i3d_convert.verification.verify  # noqa: F401  (the package attribute ``verify`` is the function)

    verify_module = sys.modules["i3d_convert.verification.verify"]
    monkeypatch.setattr(verify_module, "verify", functools.partial(verify_module.verify, cache=tf_cache))
    return cli


def _labels(num_classes):
    from i3d_convert.weights.releases import load_labels

    return load_labels(num_classes)


# --------------------------------------------------------------------------- the one-command demo


def test_verify_without_arguments_exits_0_and_prints_every_endpoint(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), TF_CPP_MIN_LOG_LEVEL="3", COLUMNS="160")
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "i3d_convert.cli.app", "verify"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - start
    print(f"\n`i3d-convert verify`: {seconds:.1f} s wall\n{result.stdout}")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = result.stdout.splitlines()
    for name in arch.ENDPOINTS:
        row = next((line.split("\t") for line in lines if line.split("\t")[0] == name), None)
        assert row is not None, f"no table row for {name}"  # piped: tab-separated rows, never wrapped
        assert row[-1] == "ok", row
    assert "PASS" in result.stdout and "[1, 16, 224, 224, 3]" in result.stdout
    assert "top-5 PyTorch" in result.stdout and "top-5 TensorFlow" in result.stdout
    assert list(tmp_path.iterdir()) == [], "the demo must not leave files behind"
    assert seconds < DEMO_SECONDS, f"took {seconds:.1f} s (budget {DEMO_SECONDS} s on 2 cores)"


# --------------------------------------------------------------------------- parity on the three schemas


@pytest.mark.parametrize("release", SCHEMA_RELEASES)
def test_float64_every_endpoint_within_1e_10(release, synthetic_checkpoint, tf_cache, rgb64):
    from i3d_convert.weights.releases import RELEASES
    from i3d_convert.verification.verify import verify

    rel = RELEASES[release]
    report = rgb64 if release == "rgb_imagenet" else verify(
        synthetic_checkpoint(release), dtype="float64", frames=FRAMES, cache=tf_cache)
    print(f"\n{release} float64: worst rel L2 {max(r.rel_l2 for r in report.rows):.3e}")
    assert report.passed and report.first_diverging is None and report.exit_code == 0
    assert [r.name for r in report.rows] == list(arch.ENDPOINTS)
    for row in report.rows:
        assert row.rel_l2 <= FLOAT64_REL_L2 and row.allowed_rel_l2 == FLOAT64_REL_L2, row
        assert row.floor is None
    assert report.row("Logits").shape == [1, rel.num_classes]
    assert report.input["shape_nthwc"] == [1, FRAMES, 224, 224, rel.in_channels]
    assert report.checkpoint.endswith("[tf1]")
    labels = _labels(rel.num_classes)
    assert [t.label for t in report.top_tf] == [labels[t.index] for t in report.top_tf]
    assert [t.index for t in report.top_torch] == [t.index for t in report.top_tf]


@pytest.mark.parametrize("release", SCHEMA_RELEASES)
def test_float32_within_three_times_tensorflows_own_float32_error(release, synthetic_checkpoint, tf_cache):
    from i3d_convert.verification.verify import verify

    report = verify(synthetic_checkpoint(release), dtype="float32", frames=FRAMES, cache=tf_cache)
    print(f"\n{release} float32:")
    for row in report.rows:
        print(f"  {row.name:18s} rel L2 {row.rel_l2:.3e}  floor {row.floor:.3e}  ratio {row.rel_l2 / row.floor:.2f}")
    assert report.passed, report.first_diverging
    for row in report.rows:
        # the floor is a real float32 round-off measurement, not zero and not a blow-up
        assert 1e-9 < row.floor < 1e-3, row
        assert row.allowed_rel_l2 == max(FLOAT32_FLOOR_FACTOR * row.floor, FLOAT32_REL_L2_MIN)
        assert row.rel_l2 <= row.allowed_rel_l2
    logits = report.row("Logits")
    assert logits.max_abs <= FLOAT32_LOGITS_ATOL and logits.allowed_max_abs == FLOAT32_LOGITS_ATOL
    assert report.top_torch[0].index == report.top_tf[0].index


# --------------------------------------------------------------------------- failures are caught and located


def test_perturbed_tensor_exits_1_naming_the_first_diverging_endpoint(synthetic_checkpoint, tmp_path, cached_cli):
    from i3d_convert import convert
    from i3d_convert.conversion.tf_to_torch import save_state_dict

    prefix = synthetic_checkpoint("rgb_imagenet")
    state = convert(prefix)
    state[PERTURBED_UNIT] = state[PERTURBED_UNIT] * PERTURBATION
    weights = save_state_dict(state, tmp_path / "perturbed.safetensors")
    report_path = tmp_path / "report.json"
    code, out, err = cached_cli("verify", prefix, "--torch", weights, "--dtype", "float64", "--frames", FRAMES,
                                "--json", report_path)
    assert code == 1, out + err
    assert "first diverging endpoint Mixed_4c" in " ".join(out.split())
    report = json.loads(report_path.read_text())
    assert report["passed"] is False and report["first_diverging"] == "Mixed_4c"
    by_name = {row["name"]: row for row in report["rows"]}
    order = list(arch.ENDPOINTS)
    assert all(by_name[n]["passed"] for n in order[: order.index("Mixed_4c")])
    assert not by_name["Mixed_4c"]["passed"] and not by_name["Logits"]["passed"]


def test_bn_eps_1e5_on_the_torch_side_fails_at_the_first_batch_norm_and_is_named(synthetic_checkpoint, tf_cache):
    from i3d_convert.verification.verify import verify

    report = verify(synthetic_checkpoint("rgb_imagenet"), dtype="float32", frames=FRAMES, torch_bn_eps=1e-5,
                    cache=tf_cache)
    print(f"\neps 1e-5 vs 1e-3 (synthetic rgb, {FRAMES}x224x224, float32): logits rel L2 "
          f"{report.row('Logits').rel_l2:.3e}; cause: {report.cause}")
    assert not report.passed and report.first_diverging == "Conv3d_1a_7x7"
    assert [v.reset for v in report.audit] == [["bn_eps"]] and report.audit[0].passed
    assert "batch-norm eps 1e-05" in report.cause


# --------------------------------------------------------------------------- auditing the piergiaj port


@pytest.fixture(scope="module")
def piergiaj_file(synthetic_checkpoint, tmp_path_factory):
    from i3d_convert.conversion.tf_to_torch import convert_checkpoint, save_state_dict

    result = convert_checkpoint(synthetic_checkpoint("rgb_imagenet"), layout="piergiaj")
    assert "Mixed_3b.b1b.conv3d.weight" in result.state_dict
    return save_state_dict(result.state_dict, tmp_path_factory.mktemp("piergiaj") / "rgb_imagenet.pt")


def test_piergiaj_layout_with_deepminds_settings_matches_tensorflow(synthetic_checkpoint, piergiaj_file, tf_cache):
    from i3d_convert.verification.verify import verify

    report = verify(synthetic_checkpoint("rgb_imagenet"), torch_weights=piergiaj_file, layout="piergiaj",
                    dtype="float32", frames=FRAMES, cache=tf_cache)
    assert report.passed, [(r.name, r.rel_l2) for r in report.rows]
    assert report.audit == [] and report.cause is None


def test_piergiaj_audit_separates_symmetric_padding_from_eps_and_exits_1(synthetic_checkpoint, piergiaj_file,
                                                                         cached_cli, tmp_path):
    report_path = tmp_path / "audit.json"
    code, out, err = cached_cli("verify", synthetic_checkpoint("rgb_imagenet"), "--torch", piergiaj_file,
                                "--layout", "piergiaj", "--bn-eps", "1e-5", "--pad", "symmetric",
                                "--frames", FRAMES, "--json", report_path)
    text = " ".join(out.split())
    assert code == 1, out + err
    print(f"\n{text[text.index('cause:'):]}")
    assert "first diverging endpoint Conv3d_1a_7x7" in text
    assert ("cause: caused by batch-norm eps 1e-05 (DeepMind: 0.001) and symmetric padding (DeepMind: TF 'SAME', "
            "extra pixel after)") in text
    report = json.loads(report_path.read_text())
    variants = {tuple(v["reset"]): v for v in report["audit"]}
    assert {reset: v["passed"] for reset, v in variants.items()} == {
        ("bn_eps",): False, ("pad",): False, ("bn_eps", "pad"): True}
    # symmetric padding alone (eps reset) shifts the stem's stride-2 windows: wrong from the first layer,
    # and on 9 frames it even leaves Mixed_5c one time step, too short for the Logits pool
    assert variants[("bn_eps",)]["first_diverging"] == "Conv3d_1a_7x7"
    logits = report["rows"][-1]
    assert logits["name"] == "Logits" and "PyTorch side failed" in logits["problem"]
    # eps 1e-5 alone (padding reset) also diverges at the first batch norm
    assert variants[("pad",)]["first_diverging"] == "Conv3d_1a_7x7"


def test_torch_file_alone_is_checked_against_tensorflow_on_its_own_weights(piergiaj_file, tf_cache):
    from i3d_convert.verification.verify import verify

    report = verify(torch_weights=piergiaj_file, layout="piergiaj", dtype="float32", frames=FRAMES, cache=tf_cache)
    assert report.passed and report.checkpoint == "none"
    assert any("semantics" in note for note in report.notes)


# --------------------------------------------------------------------------- report outputs


def test_json_holds_the_numbers_versions_devices_and_input_hash(rgb64, tmp_path):
    import hashlib

    from i3d_convert.weights.synthetic import random_clip
    from i3d_convert.verification.metrics import ncthw_to_nthwc

    path = rgb64.write_json(tmp_path / "report.json")
    data = json.loads(path.read_text())
    assert data["passed"] is True and data["dtype"] == "float64"
    assert [row["name"] for row in data["rows"]] == list(arch.ENDPOINTS)
    assert data["rows"][-1]["rel_l2"] == rgb64.row("Logits").rel_l2
    assert {"torch", "tensorflow", "i3d_convert", "numpy"} <= set(data["versions"])
    assert data["versions"]["torch"] == torch.__version__
    assert data["devices"]["torch"] == "cpu" and data["devices"]["tensorflow"] == "CPU"
    assert len(data["top_torch"]) == 5 and {"label", "logit", "probability"} <= set(data["top_tf"][0])
    # the hash is of the clip both sides ran on: recompute it independently
    clip = ncthw_to_nthwc(random_clip((1, 3, FRAMES, 224, 224), seed=0, dtype=torch.float64).numpy())
    assert data["input"]["sha256"] == hashlib.sha256(np.ascontiguousarray(clip).tobytes()).hexdigest()
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_plot_is_a_log_scale_image_written_atomically(rgb64, tmp_path):
    pytest.importorskip("matplotlib")
    from i3d_convert.verification.verify import plot_report

    for name, magic in (("errors.png", b"\x89PNG"), ("errors.svg", b"<?xml")):
        path = plot_report(rgb64, tmp_path / name)
        assert path.read_bytes()[: len(magic)] == magic
    assert sorted(p.name for p in tmp_path.iterdir()) == ["errors.png", "errors.svg"]
    with pytest.raises(I3DConvertError):
        plot_report(rgb64, tmp_path / "errors.bmp")


# --------------------------------------------------------------------------- inputs and argument errors


def test_npy_input_is_used_as_given_and_hashed(synthetic_checkpoint, tmp_path, tf_cache):
    import hashlib

    from i3d_convert.verification.verify import verify

    rng = np.random.default_rng(5)
    clip = np.clip(rng.standard_normal((1, FRAMES, 224, 224, 2)) * 0.5, -1, 1).astype(np.float32)
    path = tmp_path / "flow.npy"
    np.save(path, clip)
    report = verify(synthetic_checkpoint("flow_imagenet"), clip=path, dtype="float64", cache=tf_cache)
    assert report.passed
    assert report.input["file_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert report.input["sha256"] == hashlib.sha256(clip.astype(np.float64).tobytes()).hexdigest()


def test_gif_input_is_read_like_deepminds_sample(synthetic_checkpoint, tf_cache):
    from i3d_convert.verification.verify import verify

    gif = KINETICS_FIXTURES / "v_CricketShot_g04_c01_rgb.gif"
    if not gif.is_file():
        pytest.skip(f"shared fixture {gif} is absent")
    report = verify(synthetic_checkpoint("rgb_imagenet"), clip=gif, frames=FRAMES, dtype="float64",
                    cache=tf_cache)
    assert report.passed and report.input["shape_nthwc"] == [1, FRAMES, 224, 224, 3]
    assert report.input["source"] == str(gif)


@pytest.mark.parametrize("kwargs, message", [
    (dict(frames=arch.MIN_LOGITS_FRAMES - 1), f"at least {arch.MIN_LOGITS_FRAMES}"),
    (dict(device="cuda"), "cuda"),
    (dict(dtype="float16"), "float32 or float64"),
    (dict(pad="symmetric"), "layout='piergiaj'"),
    (dict(layout="mmaction"), "unknown layout"),
    (dict(torch_bn_eps=0.0), "positive"),
    (dict(tf_device="tpu"), "TensorFlow device"),
])
def test_bad_arguments_are_one_line_errors(kwargs, message, synthetic_checkpoint):
    from i3d_convert.verification.verify import verify

    if kwargs.get("device") == "cuda" and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(I3DConvertError, match=message):
        verify(synthetic_checkpoint("rgb_imagenet"), dtype=kwargs.pop("dtype", "float64"), **kwargs)


def test_flow_checkpoint_with_a_gif_is_a_channel_error(synthetic_checkpoint, cli):
    gif = KINETICS_FIXTURES / "v_CricketShot_g04_c01_rgb.gif"
    if not gif.is_file():
        pytest.skip(f"shared fixture {gif} is absent")
    code, out, err = cli("verify", synthetic_checkpoint("flow_imagenet"), "--input", gif)
    assert code == 1 and "channels" in err and len(err.strip().splitlines()) == 1, err
