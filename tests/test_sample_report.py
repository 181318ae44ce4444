"""The evaluate-sample report is DeepMind's evaluate_sample.py output, character for character."""

from __future__ import annotations

import io

import numpy as np
import pytest

from i3d_convert.architecture import MIN_LOGITS_FRAMES
from i3d_convert.verification.sample_report import format_report, format_sample_report, parse_report, softmax_float32

from conftest import KINETICS_FIXTURES, requires_shared

TF_V1 = KINETICS_FIXTURES / "reference-outputs" / "tf_v1"
TF_V1_FILES = ("imagenet_flow", "imagenet_joint", "imagenet_rgb", "no_imagenet_flow",
               "no_imagenet_joint", "no_imagenet_rgb", "no_imagenet_rgb600")


@pytest.mark.parametrize("name", TF_V1_FILES)
def test_reprinting_deepminds_published_numbers_gives_the_identical_file(name):
    path = TF_V1 / f"{name}.txt"
    requires_shared(path)
    text = path.read_text()
    report = parse_report(text)
    assert len(report.rows) == 20
    assert all(isinstance(p, np.float32) and isinstance(l, np.float32) for p, l, _ in report.rows)
    assert format_report(report.norm, report.rows) == text


def _deepmind_print(logits: np.ndarray, labels) -> str:
    """The last lines of DeepMind's evaluate_sample.py, run literally (predictions from a float32 softmax)."""
    out = io.StringIO()
    out_logits = logits
    out_predictions = softmax_float32(logits)
    sorted_indices = np.argsort(out_predictions)[::-1]
    print("Norm of logits: %f" % np.linalg.norm(out_logits), file=out)
    print("\nTop classes and probabilities", file=out)
    for index in sorted_indices[:20]:
        print(out_predictions[index], out_logits[index], labels[index], file=out)
    return out.getvalue()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_report_from_logits_equals_deepminds_print_statements(seed):
    from i3d_convert.weights.releases import load_labels

    labels = load_labels(400)
    rng = np.random.default_rng(seed)
    logits = (rng.standard_normal(400) * 4).astype(np.float32)
    logits[rng.integers(400)] += 20  # a confident top class, as on the sample clip
    assert format_sample_report(logits, labels) == _deepmind_print(logits, labels)
    assert format_sample_report(logits[None], labels) == _deepmind_print(logits, labels)


def test_float32_numbers_print_like_numpy_scalars_not_python_floats():
    text = format_report(1.5, [(np.float32(0.9477567), np.float32(15.957029), "a"), (np.float32(2.2207e-05), np.float32(1.0), "b")])
    assert text.splitlines()[3:] == ["0.9477567 15.957029 a", "2.2207e-05 1.0 b"]


def test_softmax_is_float32_and_normalised():
    p = softmax_float32(np.array([1000.0, 0.0, -1000.0], dtype=np.float32))
    assert p.dtype == np.float32 and p[0] == 1.0 and p[1] == 0.0


def test_top_k_and_label_count_are_checked():
    labels = [f"c{i}" for i in range(5)]
    text = format_sample_report(np.arange(5, dtype=np.float32), labels, top_k=3)
    assert [line.split(" ", 2)[2] for line in text.splitlines()[3:]] == ["c4", "c3", "c2"]
    with pytest.raises(ValueError):
        format_sample_report(np.arange(4, dtype=np.float32), labels)
    with pytest.raises(ValueError):
        format_sample_report(np.zeros((2, 5), dtype=np.float32), labels)


@pytest.mark.parametrize("text", ["", "Norm of logits: 1.0\nTop classes\n", "Norm of logits: 1.000000\n\nTop classes and probabilities\n0.5 1.0\n"])
def test_parse_rejects_other_text(text):
    with pytest.raises(ValueError):
        parse_report(text)


# --------------------------------------------------------------------------- the evaluate-sample command

GIF = KINETICS_FIXTURES / "v_CricketShot_g04_c01_rgb.gif"


def test_evaluate_sample_json_lists_the_same_classes_as_the_report(synthetic_checkpoint, cli):
    requires_shared(GIF)
    import json

    prefix = synthetic_checkpoint("rgb_imagenet")
    code, text, err = cli("evaluate-sample", "--gif", GIF, "--weights", prefix, "--frames", str(MIN_LOGITS_FRAMES), "--top-k", "5")
    assert code == 0, err
    code, out, err = cli("evaluate-sample", "--gif", GIF, "--weights", prefix, "--frames", str(MIN_LOGITS_FRAMES), "--top-k", "5", "--json")
    assert code == 0, err
    data = json.loads(out)
    report = parse_report(text)
    assert len(data["top"]) == len(report.rows) == 5
    assert [t["label"] for t in data["top"]] == [label for _, _, label in report.rows]
    assert abs(data["norm_of_logits"] - report.norm) < 1e-5


@pytest.mark.parametrize("case", ["broken-gif", "too-few-frames", "flow-weights", "bad-weights"])
def test_evaluate_sample_errors_are_one_line(case, synthetic_checkpoint, tmp_path, cli):
    requires_shared(GIF)
    args = ["evaluate-sample", "--gif", GIF, "--weights", synthetic_checkpoint("rgb_imagenet"), "--frames", str(MIN_LOGITS_FRAMES)]
    expected = {"broken-gif": "broken.gif", "too-few-frames": f"at least {MIN_LOGITS_FRAMES}",
                "flow-weights": "3", "bad-weights": "junk.pt"}[case]
    if case == "broken-gif":
        (tmp_path / "broken.gif").write_bytes(b"GIF89a\x00")
        args[2] = tmp_path / "broken.gif"
    elif case == "too-few-frames":
        args[-1] = "8"
    elif case == "flow-weights":
        args[4] = synthetic_checkpoint("flow_imagenet")
    elif case == "bad-weights":
        (tmp_path / "junk.pt").write_bytes(b"\x80\x04junk")
        args[4] = tmp_path / "junk.pt"
    code, out, err = cli(*args)
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and expected in err, err
