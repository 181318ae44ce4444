"""DeepMind's ``evaluate_sample.py`` report, byte for byte.

DeepMind's script (kinetics-i3d, TF1) ends with::

    out_logits = out_logits[0]
    out_predictions = out_predictions[0]        # tf.nn.softmax, float32
    sorted_indices = np.argsort(out_predictions)[::-1]
    print('Norm of logits: %f' % np.linalg.norm(out_logits))
    print('\\nTop classes and probabilities')
    for index in sorted_indices[:20]:
      print(out_predictions[index], out_logits[index], kinetics_classes[index])

so the report is: the float32 norm with ``%f``; a blank line; a title; then
one line per class ``<probability> <logit> <label>`` where both numbers are
numpy float32 scalars printed with ``str`` (numpy's shortest round-trip
repr: ``0.9477567``, ``1.0``, ``2.2207e-05``). Every line ends with ``\\n``.

:func:`format_sample_report` builds that text from a logits vector;
:func:`format_report` from already computed numbers; :func:`parse_report`
reads a report back (used to check the format against DeepMind's published
outputs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence, Tuple

import numpy as np

#: DeepMind's report lists this many classes.
DEFAULT_TOP_K = 20
NORM_PREFIX = "Norm of logits: "
TITLE = "Top classes and probabilities"

Row = Tuple[np.float32, np.float32, str]  # (probability, logit, label)


@dataclass(frozen=True)
class SampleReport:
    """The numbers of one report, as printed (float32 values, float norm)."""

    norm: float
    rows: List[Row]


def softmax_float32(logits) -> np.ndarray:
    """Softmax of a 1-D logits vector, computed in float32 (as ``tf.nn.softmax`` on float32 logits)."""
    x = np.asarray(logits, dtype=np.float32).reshape(-1)
    e = np.exp(x - x.max())
    return (e / e.sum(dtype=np.float32)).astype(np.float32)


def format_report(norm: float, rows: Sequence[Row]) -> str:
    """The report text for a given norm and ``(probability, logit, label)`` rows, in order.

    Probabilities and logits are formatted as numpy float32 scalars (``str``),
    exactly as ``print(prob, logit, label)`` does in DeepMind's script.
    """
    lines = [f"{NORM_PREFIX}{'%f' % float(norm)}", "", TITLE]
    for prob, logit, label in rows:
        # str(), not an f-string: format(np.float32, "") is float's repr of the widened value.
        lines.append(" ".join((str(np.float32(prob)), str(np.float32(logit)), label)))
    return "\n".join(lines) + "\n"


def top_rows(logits, labels: Sequence[str], top_k: int = DEFAULT_TOP_K) -> List[Row]:
    """The ``top_k`` ``(probability, logit, label)`` rows, ordered as DeepMind's script orders them
    (``np.argsort`` of the float32 probabilities, reversed)."""
    x = np.asarray(logits, dtype=np.float32).reshape(-1)
    if len(labels) != x.size:
        raise ValueError(f"{x.size} logits but {len(labels)} labels")
    probs = softmax_float32(x)
    order = np.argsort(probs)[::-1][: max(0, int(top_k))]
    return [(probs[i], x[i], labels[i]) for i in order]


def format_sample_report(logits, labels: Sequence[str], top_k: int = DEFAULT_TOP_K) -> str:
    """DeepMind's ``evaluate_sample.py`` report for one logits vector ``[num_classes]``
    (or ``[1, num_classes]``): float32 norm, float32 softmax, top ``top_k`` classes."""
    x = np.asarray(logits, dtype=np.float32)
    if x.ndim == 2 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 1:
        raise ValueError(f"expected one logits vector [num_classes], got shape {list(np.shape(logits))}")
    return format_report(np.linalg.norm(x), top_rows(x, labels, top_k))


def parse_report(text: str) -> SampleReport:
    """Read a report in DeepMind's format back into numbers; ``ValueError`` if it is not one."""
    lines = text.split("\n")
    if len(lines) < 4 or not lines[0].startswith(NORM_PREFIX) or lines[1] != "" or lines[2] != TITLE:
        raise ValueError("not an evaluate_sample.py report: expected 'Norm of logits: ...', a blank line and the title")
    if lines[-1] != "":
        raise ValueError("report does not end with a newline")
    norm = float(lines[0][len(NORM_PREFIX):])
    rows: List[Row] = []
    for number, line in enumerate(lines[3:-1], start=4):
        parts = line.split(" ", 2)
        if len(parts) != 3:
            raise ValueError(f"line {number}: expected '<probability> <logit> <label>', got {line!r}")
        rows.append((np.float32(parts[0]), np.float32(parts[1]), parts[2]))
    return SampleReport(norm, rows)


__all__ = ["SampleReport", "format_report", "format_sample_report", "parse_report", "softmax_float32", "top_rows"]
