"""Prove, endpoint by endpoint, that the converted PyTorch model computes what TensorFlow computes.

:func:`verify` runs both frameworks on the same clip and compares every
endpoint (``Conv3d_1a_7x7`` ... ``Mixed_5c``, ``Logits``):

* **TensorFlow side** (the reference): the checkpoint is read by TensorFlow's
  own reader (:func:`i3d_convert.reference.tf_checkpoint.reference_variables`:
  ``tf.train.load_checkpoint``, or TF2 object-based checkpoints of the Sonnet 2
  port restored into :class:`i3d_convert.reference.sonnet.SonnetI3D`)
  and run by :func:`i3d_convert.reference.tf_forward.tf_forward`
  (plain ``tf.nn`` ops, 'SAME' padding, batch-norm eps ``bn_eps``).
* **PyTorch side** (under test): the checkpoint converted by this package's
  TF-free reader and mapping (or a state_dict file given as ``torch_weights``,
  in the ``native`` or ``piergiaj`` layout), loaded strictly into
  :class:`~i3d_convert.models.i3d.InceptionI3d` (native) or
  :class:`~i3d_convert.models.ports.PiergiajI3D` (that port's semantics: its
  ``bn_eps`` and ``pad`` settings).

Tolerances (:mod:`i3d_convert.verification.tolerances`, derivation in docs/verify.md):

* float64: every endpoint's relative L2 error <= ``FLOAT64_REL_L2`` (1e-10);
* float32: every endpoint's relative L2 error <= ``FLOAT32_FLOOR_FACTOR`` (3) x
  the *floor* -- TensorFlow's own float32-vs-float64 error at that endpoint,
  measured on the same clip (so TensorFlow also runs in float64) -- and at
  least ``FLOAT32_REL_L2_MIN``; logits max |diff| <= ``FLOAT32_LOGITS_ATOL`` (1e-3).

``rtol`` replaces the relative-L2 allowance of every endpoint; ``atol`` the
logits max |diff| allowance (also applied in float64 when given).

TensorFlow runs in this process: :mod:`i3d_convert.reference.tf_runtime` loads
torchvision/Triton's native code before TensorFlow, which avoids this
environment's import-order segfault, and keeping one process avoids pickling
~100-400 MB of float64 activations through a pipe and a second interpreter
start (~5-10 s of the 60 s budget of ``i3d-convert verify`` on 2 cores).


Steps, one module each: :mod:`~i3d_convert.verification.options` (the settings),
:mod:`~i3d_convert.verification.inputs` (the clip), :mod:`~i3d_convert.verification.sides`
(the two runs), :mod:`~i3d_convert.verification.compare` (rows and tolerances),
:mod:`~i3d_convert.verification.audit` (the cause search) and
:mod:`~i3d_convert.verification.report` (the report, its JSON and plot).
"""

from __future__ import annotations

import hashlib
import platform
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

import numpy as np
import torch

from i3d_convert._version import __version__
from i3d_convert.architecture import ENDPOINTS, LOGITS_NAME
from i3d_convert.errors import PathLike
from i3d_convert.verification.audit import audit_settings
from i3d_convert.verification.compare import TOP_K, compare_endpoints, first_failure, top_classes
from i3d_convert.verification.inputs import array_sha256, check_logits_input, load_input
from i3d_convert.verification.metrics import difference
from i3d_convert.verification.options import (
    DEFAULT_FRAMES, DEFAULT_SEED, DTYPES, PAD_MODES, VERIFY_LAYOUTS, VerifyOptions,
)
from i3d_convert.verification.report import AuditVariant, EndpointRow, TopClass, VerifyReport, plot_report
from i3d_convert.verification.sides import (
    TensorFlowSide, TorchSide, build_torch_model, reference_from_state, state_dict_classes,
)
from i3d_convert.verification.tolerances import FLOAT32_FLOOR_FACTOR, FLOAT32_LOGITS_ATOL, FLOAT32_REL_L2_MIN, FLOAT64_REL_L2

#: Release whose names and shapes the built-in synthetic checkpoint has.
DEMO_RELEASE = "rgb_imagenet"


class _Stopwatch:
    """Seconds per step, in the order the steps ran."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.timings: Dict[str, float] = {}

    @contextmanager
    def step(self, label: str) -> Iterator[None]:
        t0 = time.perf_counter()
        yield
        self.timings[label] = time.perf_counter() - t0

    def rounded(self) -> Dict[str, float]:
        self.timings["total"] = time.perf_counter() - self.started
        return {k: round(v, 3) for k, v in self.timings.items()}


@dataclass
class _Weights:
    """Both sides' weights: the PyTorch state_dict and the TensorFlow variables, with their descriptions."""

    state: Mapping[str, torch.Tensor]
    torch_source: str
    variables: Mapping[str, np.ndarray]
    checkpoint_label: str


def _load_weights(checkpoint: Optional[PathLike], options: VerifyOptions, tmp: Path, notes: List[str],
                  watch: _Stopwatch) -> _Weights:
    """The PyTorch state_dict (converted or ``torch_weights``) and TensorFlow's variables (its own reader)."""
    from i3d_convert.conversion.sources import check_finite
    from i3d_convert.conversion.tf_to_torch import convert_checkpoint
    from i3d_convert.conversion.sources import load_state_dict_file
    from i3d_convert.reference.tf_checkpoint import reference_variables

    if checkpoint is None and options.torch_weights is None:
        with watch.step("synthetic_checkpoint"):
            from i3d_convert.weights.synthetic import write_synthetic_checkpoint

            checkpoint = write_synthetic_checkpoint(tmp / DEMO_RELEASE, DEMO_RELEASE, options.seed)
        label = f"built-in synthetic checkpoint ({DEMO_RELEASE} names and shapes, seed {options.seed})"
        notes.append("synthetic weights: calibrated random weights, so the classes mean nothing")
    else:
        label = str(checkpoint) if checkpoint is not None else "none"
    with watch.step("load_weights"):
        if options.torch_weights is not None:
            state = load_state_dict_file(options.torch_weights)
            check_finite(state, options.torch_weights, allow_non_finite=options.allow_non_finite)
            torch_source = str(options.torch_weights)
        else:
            state = convert_checkpoint(checkpoint, layout=options.layout,  # type: ignore[arg-type]
                                       allow_non_finite=options.allow_non_finite).state_dict
            torch_source = f"{checkpoint} converted by i3d_convert ({options.layout} layout)"
        if checkpoint is not None:
            variables, kind = reference_variables(checkpoint)
            label += f" [{kind}]"
        else:
            variables = reference_from_state(state, options.layout)
            notes.append("no TensorFlow checkpoint given: TensorFlow ran on the weights of the torch_weights file, "
                         "so this checks the port's semantics, not its weight conversion")
    return _Weights(state, torch_source, variables, label)


def _weights_key(variables: Mapping[str, np.ndarray], clip_sha256: str) -> Tuple[str, str]:
    """What identifies a TensorFlow run's inputs in the cache: the variables' names and bytes, and the clip."""
    digest = hashlib.sha256(b"".join(name.encode() + np.ascontiguousarray(variables[name]).tobytes()
                                     for name in sorted(variables)))
    return digest.hexdigest(), clip_sha256


def _run_tensorflow(tf_side: TensorFlowSide, clip: np.ndarray, options: VerifyOptions,
                    watch: _Stopwatch) -> Tuple[Dict[str, np.ndarray], Optional[Dict[str, float]]]:
    """TensorFlow's endpoints in ``options.dtype`` and, for float32, the floor: its own float32-vs-float64 error."""
    with watch.step(f"tensorflow_{options.dtype}"):
        tf_out = tf_side.run(clip, options.dtype, options.allow_tf32)
    if options.dtype != "float32":
        return tf_out, None
    with watch.step("tensorflow_float64_floor"):
        tf64 = tf_side.run(clip, "float64", False)
        floors = {name: difference(tf_out[name], tf64[name]).rel_l2 for name in ENDPOINTS}
    return tf_out, floors


def _settings(options: VerifyOptions) -> Dict[str, Any]:
    """The settings and tolerance rule as the report states them."""
    if options.rtol is not None:
        rule = "rtol given: relative L2 <= rtol at every endpoint"
    elif options.dtype == "float64":
        rule = f"relative L2 <= {FLOAT64_REL_L2:g} at every endpoint"
    else:
        rule = (f"relative L2 <= max({FLOAT32_FLOOR_FACTOR:g} x floor, {FLOAT32_REL_L2_MIN:g}) at every "
                f"endpoint; floor = TensorFlow float32 vs float64")
    logits_atol = options.atol if options.atol is not None else (
        FLOAT32_LOGITS_ATOL if options.dtype == "float32" else None)
    return {"bn_eps_tensorflow": options.bn_eps, "bn_eps_torch": options.torch_eps, "pad_torch": options.pad,
            "allow_tf32": options.allow_tf32, "atol": options.atol, "rtol": options.rtol, "tolerance": rule,
            "logits_atol": logits_atol}


def _versions() -> Dict[str, str]:
    out = {"i3d_convert": __version__, "python": platform.python_version(), "numpy": np.__version__,
           "torch": torch.__version__}
    tf = sys.modules.get("tensorflow")
    if tf is not None:
        out["tensorflow"] = tf.__version__
    snt = sys.modules.get("sonnet")
    if snt is not None:
        out["dm-sonnet"] = getattr(snt, "__version__", "?")
    out["platform"] = platform.platform()
    return out


def _device_info(torch_device: torch.device, tf_device: str, allow_tf32: bool) -> Dict[str, Any]:
    from i3d_convert.reference.tf_checkpoint import tf_gpu_name

    info: Dict[str, Any] = {"torch": str(torch_device), "tensorflow": tf_device.upper()}
    if torch_device.type == "cuda":
        info["torch_gpu"] = torch.cuda.get_device_name(torch_device)
        info["torch_tf32"] = {"matmul": allow_tf32, "cudnn": allow_tf32}
    else:
        info["torch_tf32"] = "n/a (CPU)"
        info["torch_threads"] = torch.get_num_threads()
    if tf_device == "gpu":
        info["tensorflow_gpu"] = tf_gpu_name()
        info["tensorflow_tf32"] = allow_tf32
    else:
        info["tensorflow_tf32"] = "n/a (CPU)"
    return info


def verify(checkpoint: Optional[PathLike] = None, *, options: Optional[VerifyOptions] = None,
           **settings: Any) -> VerifyReport:
    """Run PyTorch and TensorFlow on one clip and compare every endpoint.

    ``checkpoint``: TF checkpoint (TF1 name-based or TF2 object-based; prefix,
    ``.index`` or folder). None: with ``torch_weights``, TensorFlow runs on the
    weights of that file (a semantics-only audit); without, a seeded calibrated
    synthetic checkpoint with the names and shapes of ``rgb_imagenet`` is
    written to a temporary folder and used.

    The settings are the fields of :class:`VerifyOptions`, given as
    ``options`` and/or as keywords (``verify(ckpt, dtype="float64", frames=9)``;
    keywords override ``options``).

    Returns a :class:`VerifyReport`; ``report.passed`` is the verdict.
    Raises :class:`I3DConvertError` for bad inputs.
    """
    return run_verification(checkpoint, VerifyOptions.from_keywords(options, settings))


def run_verification(checkpoint: Optional[PathLike], options: VerifyOptions) -> VerifyReport:
    """:func:`verify` with its settings in one :class:`VerifyOptions`."""
    from i3d_convert.weights.releases import load_labels
    from i3d_convert.device import resolve_device

    watch = _Stopwatch()
    options.check()
    torch_device = resolve_device(options.device)
    from i3d_convert.reference import tf_runtime  # noqa: F401  (imports TensorFlow after torchvision)
    from i3d_convert.reference.tf_checkpoint import resolve_tf_device

    tf_dev, device_note = resolve_tf_device(torch_device.type == "cuda", options.tf_device)
    notes: List[str] = [device_note] if device_note else []
    watch.timings["imports"] = time.perf_counter() - watch.started
    with tempfile.TemporaryDirectory(prefix="i3d-verify-") as tmp:
        weights = _load_weights(checkpoint, options, Path(tmp), notes, watch)
        in_channels, num_classes = state_dict_classes(weights.state, options.layout, weights.torch_source)
        array, input_info = load_input(options.clip, in_channels, options.frames, options.seed)
        check_logits_input(array.shape, str(options.clip) if options.clip is not None else "random clip")
        input_info.update(dtype=options.dtype, sha256=array_sha256(array.astype(options.dtype)),
                          sha256_of=f"the little-endian {options.dtype} NTHWC array both sides ran on")
        tf_side = TensorFlowSide(weights.variables, options.bn_eps, tf_dev,
                                 _weights_key(weights.variables, input_info["sha256"]), options.cache)
        tf_out, floors = _run_tensorflow(tf_side, array, options, watch)
        side = TorchSide(weights.state, options.layout, weights.torch_source, array, options.dtype, torch_device,
                         options.allow_tf32)
        with watch.step(f"torch_{options.dtype}"):
            torch_out = side.run(options.torch_eps, options.pad)
        rows = compare_endpoints(torch_out, tf_out, options.dtype, floors=floors, atol=options.atol,
                                 rtol=options.rtol)
        first = first_failure(rows)
        labels = load_labels(num_classes)
        torch_logits = torch_out[LOGITS_NAME]
        top_torch = [] if isinstance(torch_logits, str) else top_classes(torch_logits[0], labels)
        top_tf = top_classes(tf_out[LOGITS_NAME][0], labels)
        del torch_out
        variants: List[AuditVariant] = []
        cause = None
        if first is not None and options.audit:
            with watch.step("audit"):
                variants, cause = audit_settings(side, tf_out, floors, options)
    return VerifyReport(
        passed=first is None, first_diverging=first, rows=rows, top_torch=top_torch, top_tf=top_tf,
        checkpoint=weights.checkpoint_label,
        torch_weights=str(options.torch_weights) if options.torch_weights is not None else None,
        layout=options.layout, dtype=options.dtype, settings=_settings(options),
        devices=_device_info(torch_device, tf_dev, options.allow_tf32), input=input_info, versions=_versions(),
        timings=watch.rounded(), audit=variants, cause=cause, notes=notes,
    )


__all__ = [
    "AuditVariant", "DEFAULT_FRAMES", "DEFAULT_SEED", "DEMO_RELEASE", "DTYPES", "EndpointRow", "PAD_MODES", "TOP_K",
    "TopClass", "VERIFY_LAYOUTS", "VerifyOptions", "VerifyReport", "build_torch_model", "compare_endpoints",
    "load_input", "plot_report", "run_verification", "top_classes", "verify",
]
