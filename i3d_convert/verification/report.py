"""What :func:`~i3d_convert.verification.verify.verify` measured: per-endpoint rows, the report, its JSON and its plot."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from i3d_convert.errors import I3DConvertError, PathLike

# --------------------------------------------------------------------------- report


@dataclass
class EndpointRow:
    """One endpoint's comparison. ``floor``: TensorFlow float32 vs float64 (float32 runs only)."""

    name: str
    shape: List[int]  # NTHWC (TensorFlow's layout); [batch, classes] for Logits
    max_abs: float
    rel_l2: float
    cosine: float
    floor: Optional[float]
    allowed_rel_l2: float
    allowed_max_abs: Optional[float]
    passed: bool
    problem: Optional[str] = None  # set when the endpoint could not be compared (shape, failure)


@dataclass
class TopClass:
    index: int
    label: str
    logit: float
    probability: float


@dataclass
class AuditVariant:
    """The PyTorch side re-run with some settings reset to DeepMind's (a cause search)."""

    settings: Dict[str, Any]  # bn_eps, pad of this run
    reset: List[str]  # which settings were reset to the reference's value
    logits_rel_l2: float
    worst_rel_l2_ratio: float  # max over endpoints of rel_l2 / allowed
    first_diverging: Optional[str]
    passed: bool


@dataclass
class VerifyReport:
    """Everything :func:`verify` measured; :meth:`to_json` writes it, the CLI prints it."""

    passed: bool
    first_diverging: Optional[str]
    rows: List[EndpointRow]
    top_torch: List[TopClass]
    top_tf: List[TopClass]
    checkpoint: str
    torch_weights: Optional[str]
    layout: str
    dtype: str
    settings: Dict[str, Any]
    devices: Dict[str, Any]
    input: Dict[str, Any]
    versions: Dict[str, str]
    timings: Dict[str, float]
    audit: List[AuditVariant] = field(default_factory=list)
    cause: Optional[str] = None
    notes: List[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 0 if self.passed else 1

    def row(self, name: str) -> EndpointRow:
        return next(r for r in self.rows if r.name == name)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def to_json(self, indent: int = 2) -> str:
        def clean(value: Any) -> Any:  # JSON has no inf/nan
            if isinstance(value, float) and not np.isfinite(value):
                return str(value)
            if isinstance(value, dict):
                return {k: clean(v) for k, v in value.items()}
            if isinstance(value, list):
                return [clean(v) for v in value]
            return value

        return json.dumps(clean(self.to_dict()), indent=indent)

    def write_json(self, path: PathLike) -> Path:
        """Write :meth:`to_json` atomically (an existing file is replaced)."""
        from i3d_convert.io.atomic import atomic_output

        with atomic_output(path, overwrite=True) as tmp:
            tmp.write_text(self.to_json() + "\n")
        return Path(path)


# --------------------------------------------------------------------------- plot


def plot_report(report: VerifyReport, path: PathLike) -> Path:
    """Log-scale relative L2 error (and floor / allowance) per endpoint, written atomically.

    The image format follows the suffix (``.png``, ``.svg``, ``.pdf``). Needs
    matplotlib (``pip install "i3d-convert[plot]"``); pyplot is not used, so
    no backend is switched.
    """
    from i3d_convert.io.atomic import atomic_output

    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise I3DConvertError('plotting needs matplotlib: pip install "i3d-convert[plot]"', path) from None
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".") or "png"
    if fmt not in ("png", "svg", "pdf"):
        raise I3DConvertError("{arg} must be .png, .svg or .pdf", path, argument="plot")
    tiny = 1e-18  # log scale: exact zeros drawn at this level

    def loggable(value: float) -> float:  # not comparable (inf) -> not drawn
        return max(value, tiny) if np.isfinite(value) else float("nan")

    names = [r.name for r in report.rows]
    x = np.arange(len(names))
    fig = Figure(figsize=(11, 5.5), constrained_layout=True)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    rel = [loggable(r.rel_l2) for r in report.rows]
    colours = ["tab:blue" if r.passed else "tab:red" for r in report.rows]
    ax.plot(x, rel, "-", color="tab:blue", alpha=0.4)
    ax.scatter(x, rel, c=colours, zorder=3, label="PyTorch vs TensorFlow: relative L2")
    ax.plot(x, [loggable(r.max_abs) for r in report.rows], "s--", color="tab:gray", markersize=4,
            alpha=0.7, label="max |diff|")
    shaded = [i for i, row in enumerate(report.rows) if row.problem is not None]
    for n, i in enumerate(shaded):
        ax.axvspan(i - 0.4, i + 0.4, color="tab:red", alpha=0.15,
                   label="not comparable (shape differs / PyTorch failed)" if n == 0 else None)
    if any(r.floor is not None for r in report.rows):
        ax.plot(x, [max(r.floor or 0.0, tiny) for r in report.rows], "^:", color="tab:green",
                label="floor: TensorFlow float32 vs float64")
    ax.step(x, [loggable(r.allowed_rel_l2) for r in report.rows], where="mid", color="tab:orange",
            label="allowed relative L2")
    if report.first_diverging:
        i = names.index(report.first_diverging)
        ax.axvline(i, color="tab:red", alpha=0.3, linewidth=6)
        anchor = rel[i] if np.isfinite(rel[i]) else np.nanmax([v for v in rel] + [tiny])
        ax.annotate(f"first divergence: {report.first_diverging}", (i, anchor), textcoords="offset points",
                    xytext=(8, 10), color="tab:red")
    ax.set_yscale("log")
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=45, ha="right")
    ax.set_ylabel("error (log scale)")
    verdict = "PASS" if report.passed else "FAIL"
    ax.set_title(f"i3d-convert verify: {verdict} ({report.dtype}, {report.layout}, "
                 f"torch on {report.devices.get('torch')}, TF on {report.devices.get('tensorflow')})")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    with atomic_output(path, overwrite=True) as tmp:
        fig.savefig(tmp, format=fmt, dpi=110)
    return path



__all__ = ["AuditVariant", "EndpointRow", "TopClass", "VerifyReport", "plot_report"]
