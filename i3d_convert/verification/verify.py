"""Prove, endpoint by endpoint, that the converted PyTorch model computes what TensorFlow computes.

:func:`verify` runs both frameworks on the same clip and compares every
endpoint (``Conv3d_1a_7x7`` ... ``Mixed_5c``, ``Logits``):

* **TensorFlow side** (the reference): the checkpoint is read by TensorFlow's
  own reader (``tf.train.load_checkpoint``; TF2 object-based checkpoints of the
  Sonnet 2 port are restored into :class:`i3d_convert.reference.sonnet.SonnetI3D`
  by ``tf.train.Checkpoint``) and run by :func:`i3d_convert.reference.tf_forward.tf_forward`
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
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, MutableMapping, Optional, Sequence, Tuple

import numpy as np
import torch

from i3d_convert._version import __version__
from i3d_convert import architecture as arch
from i3d_convert.errors import I3DConvertError, MappingError, PathLike
from i3d_convert.verification.metrics import difference, ncthw_to_nthwc
from i3d_convert.verification.tolerances import FLOAT32_FLOOR_FACTOR, FLOAT32_LOGITS_ATOL, FLOAT32_REL_L2_MIN, FLOAT64_REL_L2

#: Layouts a ``torch_weights`` state_dict can be in.
VERIFY_LAYOUTS = ("native", "piergiaj")
#: Padding modes of the PyTorch side (``symmetric`` exists only for the piergiaj port).
PAD_MODES = ("tf_same", "symmetric")
DTYPES = ("float32", "float64")
#: Default frames of the seeded random clip (224x224, like DeepMind's sample).
DEFAULT_FRAMES = 16
#: Seed of the default random clip and of the built-in synthetic checkpoint.
DEFAULT_SEED = 0
#: Release whose names and shapes the built-in synthetic checkpoint has.
DEMO_RELEASE = "rgb_imagenet"
#: Top classes listed for each side.
TOP_K = 5

_TF2_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
_TF2_STEM = "Conv3d_1a_7x7/conv3d/w" + _TF2_SUFFIX


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


# --------------------------------------------------------------------------- inputs


def _sha256(array: np.ndarray) -> str:
    """sha256 of the array's values as little-endian C-order bytes."""
    return hashlib.sha256(np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()).hexdigest()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_input(clip: Optional[PathLike], in_channels: int, frames: Optional[int] = None,
               seed: int = DEFAULT_SEED) -> Tuple[np.ndarray, Dict[str, Any]]:
    """The clip both sides run on, ``[1, T, H, W, C]`` float64 NTHWC in [-1, 1], and its description.

    ``clip`` None: the seeded random clip of :func:`i3d_convert.conversion.synthetic.random_clip`
    (``frames`` frames, default 16, 224x224). A ``.npy`` file: an NTHWC/THWC
    float array in [-1, 1] (first clip; first ``frames`` frames if given). Any
    other file: a video/GIF read by :func:`i3d_convert.io.video.load_video`
    (resized and centre-cropped to 224, ``u8 / 255 * 2 - 1`` as DeepMind's sample).
    """
    if frames is not None and frames < 1:
        raise I3DConvertError(f"frames must be at least 1, got {frames}")
    if clip is None:
        from i3d_convert.conversion.synthetic import random_clip

        t = DEFAULT_FRAMES if frames is None else frames
        x = random_clip((1, in_channels, t, arch.INPUT_SIZE, arch.INPUT_SIZE), seed=seed, dtype=torch.float64)
        array = ncthw_to_nthwc(x.numpy())
        info = {"source": f"seeded random clip (i3d_convert.conversion.synthetic.random_clip, seed {seed})"}
    else:
        from i3d_convert.io.clips import load_clips

        path = Path(clip)
        array = load_clips(path, frames=frames, in_channels=in_channels)[:1]
        if frames is not None:
            if array.shape[1] < frames:
                raise I3DConvertError(f"asked for {frames} frames but the clip has {array.shape[1]}", path)
            array = array[:, :frames]
        array = np.asarray(array, dtype=np.float64)
        info = {"source": str(path), "file_sha256": _file_sha256(path)}
    info["shape_nthwc"] = list(array.shape)
    return np.ascontiguousarray(array), info


def _check_logits_input(shape: Sequence[int], source: str) -> None:

    t, h, w = arch.min_logits_input()
    if shape[1] < t or shape[2] != arch.INPUT_SIZE or shape[3] != arch.INPUT_SIZE:
        raise I3DConvertError(
            f"verify compares every endpoint up to the Logits, which (as in DeepMind's network) need "
            f"{arch.INPUT_SIZE}x{arch.INPUT_SIZE} frames and at least {t} of them; the clip is "
            f"{shape[1]}x{shape[2]}x{shape[3]} (T x H x W)", source)


# --------------------------------------------------------------------------- the TensorFlow side


def _tf_checkpoint_names(path: str) -> Dict[str, Tuple[int, ...]]:
    import tensorflow as tf

    try:
        return {name: tuple(shape) for name, shape in tf.train.list_variables(path)}
    except (tf.errors.OpError, ValueError) as exc:
        raise I3DConvertError(f"TensorFlow cannot read this checkpoint ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''})", path) from None


def _resolve_prefix(checkpoint: PathLike) -> str:
    """A checkpoint prefix for TensorFlow from a prefix, an ``.index`` file or a folder."""
    from i3d_convert.io.checkpoint_reader import CheckpointReader

    with CheckpointReader(checkpoint, verify_crc=False) as reader:
        return str(reader.path)


def reference_variables(checkpoint: PathLike) -> Tuple[Dict[str, np.ndarray], str]:
    """TF1-named variables of a checkpoint as TensorFlow reads them, and the checkpoint kind.

    TF1 (name-based) checkpoints: ``tf.train.load_checkpoint``. TF2 object-based
    checkpoints of the Sonnet 2 port: restored by ``tf.train.Checkpoint`` into
    :class:`~i3d_convert.reference.sonnet.SonnetI3D` and read back from its modules
    (so this path shares nothing with :mod:`i3d_convert.names.tf2`).
    """
    import tensorflow as tf

    prefix = _resolve_prefix(checkpoint)
    shapes = _tf_checkpoint_names(prefix)
    roots = sorted({n[: -len(_TF2_STEM)] for n in shapes if n.endswith(_TF2_STEM)})
    if not roots:
        reader = tf.train.load_checkpoint(prefix)
        return {name: reader.get_tensor(name) for name in shapes}, "tf1"
    from i3d_convert.reference.sonnet import SonnetI3D

    if len(roots) != 1 or roots[0].count("/") != 1:
        raise MappingError(f"TF2 checkpoint: expected one root object holding the I3D network, found {roots}", prefix)
    root = roots[0][:-1]
    bias = shapes.get(f"{root}/Logits/logits/conv3d/b{_TF2_SUFFIX}")
    if bias is None:
        raise MappingError(f"TF2 checkpoint has no {root}/Logits/logits/conv3d/b", prefix)
    module = SonnetI3D(num_classes=int(bias[0]))
    module.build(int(shapes[roots[0] + _TF2_STEM][3]), "float32")
    try:
        tf.train.Checkpoint(**{root: module}).read(prefix).assert_existing_objects_matched()
    except (AssertionError, ValueError, tf.errors.OpError) as exc:
        raise MappingError(f"TF2 checkpoint does not restore into the Sonnet 2 I3D ({exc})", prefix) from None
    out: Dict[str, np.ndarray] = {}
    for path, unit in module.tf1_units():
        out[f"{path}/conv_3d/w"] = unit.conv3d.w.numpy()
        if unit.conv3d.with_bias:
            out[f"{path}/conv_3d/b"] = unit.conv3d.b.numpy()
        if unit.use_batch_norm:
            bn = unit.batch_norm
            if not np.all(bn.scale.numpy() == 1):
                raise MappingError(f"{path}: batch-norm scale is not all ones; DeepMind's I3D has none", prefix)
            out[f"{path}/batch_norm/beta"] = bn.offset.numpy()
            out[f"{path}/batch_norm/moving_mean"] = bn.moving_mean.average.numpy()
            out[f"{path}/batch_norm/moving_variance"] = bn.moving_variance.average.numpy()
    return out, "tf2-object"


def _tf_run(variables: Mapping[str, np.ndarray], clip: np.ndarray, dtype: str, bn_eps: float, device: str,
            allow_tf32: bool, cache: Optional[MutableMapping], key: Tuple) -> Dict[str, np.ndarray]:
    from i3d_convert.reference.tf_forward import tf_forward

    full_key = key + (dtype, bn_eps, device, allow_tf32)
    if cache is not None and full_key in cache:
        return cache[full_key]
    out = tf_forward(variables, clip.astype(dtype), dtype=dtype, bn_eps=bn_eps, device=device,
                     allow_tf32=allow_tf32)
    if cache is not None:
        cache[full_key] = out
    return out


# --------------------------------------------------------------------------- the PyTorch side


def _state_dict_classes(state: Mapping[str, torch.Tensor], layout: str, source: str) -> Tuple[int, int]:
    stem, logits = {
        "native": ("Conv3d_1a_7x7.conv.weight", f"{arch.LOGITS_NAME}.{arch.LOGITS_CONV_NAME}.conv.weight"),
        "piergiaj": ("Conv3d_1a_7x7.conv3d.weight", "logits.conv3d.weight"),
    }[layout]
    if stem not in state or logits not in state:
        raise MappingError(f"not an I3D state_dict in the {layout} layout: missing {stem!r} or {logits!r}", source)
    return int(state[stem].shape[1]), int(state[logits].shape[0])


def build_torch_model(state: Mapping[str, torch.Tensor], layout: str, bn_eps: float, pad: str,
                      source: str) -> torch.nn.Module:
    """The model a state_dict of ``layout`` is run with, loaded strictly, in eval mode."""
    from i3d_convert.models.i3d import InceptionI3d
    from i3d_convert.models.ports import PiergiajI3D

    in_channels, num_classes = _state_dict_classes(state, layout, source)
    if layout == "native":
        if pad != "tf_same":
            raise I3DConvertError("--pad symmetric applies to --layout piergiaj (the native model always "
                                  "pads as TensorFlow's 'SAME')")
        model: torch.nn.Module = InceptionI3d(num_classes, in_channels, bn_eps=bn_eps)
    else:
        model = PiergiajI3D(num_classes, in_channels, bn_eps=bn_eps, padding=pad)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0:3]
        raise MappingError(f"state_dict does not load strictly into the {layout} model: {' '.join(first)}",
                           source) from None
    return model.eval()


def _torch_run(model: torch.nn.Module, clip: np.ndarray, dtype: str,
               device: torch.device) -> Dict[str, "np.ndarray | str"]:
    """Endpoint -> NTHWC float64 array; an endpoint the model could not compute -> the error text.

    A port with other padding can shrink the time axis until its Logits pool
    has no output (piergiaj with symmetric padding on a 9-frame clip): then
    the endpoints before it are still compared.
    """
    torch_dtype = {"float32": torch.float32, "float64": torch.float64}[dtype]
    model = model.to(device=device, dtype=torch_dtype)
    x = torch.from_numpy(np.ascontiguousarray(clip.transpose(0, 4, 1, 2, 3))).to(device=device, dtype=torch_dtype)
    out: Dict[str, Any] = {}
    with torch.inference_mode():
        try:
            out.update(model.forward_endpoints(x))
        except RuntimeError as exc:
            names = [n for n in arch.ENDPOINTS if n != arch.LOGITS_NAME]
            for name in names:  # the same layers, one at a time, up to Mixed_5c
                x = getattr(model, name)(x)
                out[name] = x
            out[arch.LOGITS_NAME] = f"PyTorch side failed: {str(exc).splitlines()[0]}"
    return {name: value if isinstance(value, str) else ncthw_to_nthwc(value.double().cpu().numpy())
            for name, value in out.items()}


class _TorchTF32:
    """Set PyTorch's TF32 switches for the run and restore them afterwards."""

    def __init__(self, allow: bool) -> None:
        self.allow = allow

    def __enter__(self) -> "_TorchTF32":
        self.saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        torch.backends.cuda.matmul.allow_tf32 = self.allow
        torch.backends.cudnn.allow_tf32 = self.allow
        return self

    def __exit__(self, *exc: object) -> None:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = self.saved


# --------------------------------------------------------------------------- comparison


def compare_endpoints(candidate: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray], dtype: str, *,
                      floors: Optional[Mapping[str, float]] = None, atol: Optional[float] = None,
                      rtol: Optional[float] = None) -> List[EndpointRow]:
    """One :class:`EndpointRow` per endpoint of ``arch.ENDPOINTS`` (both dicts NTHWC)."""
    rows = []
    for name in arch.ENDPOINTS:
        a, b = candidate.get(name, "PyTorch side did not compute it"), reference[name]
        floor = None if floors is None else floors[name]
        problem = a if isinstance(a, str) else (
            f"PyTorch shape {list(a.shape)} != TensorFlow {list(b.shape)}" if a.shape != b.shape else None)
        if problem is not None:
            rows.append(EndpointRow(name, list(b.shape), float("inf"), float("inf"), float("nan"), floor,
                                    float("nan"), None, False, problem))
            continue
        d = difference(a, b)
        if rtol is not None:
            allowed = rtol
        elif dtype == "float64":
            allowed = FLOAT64_REL_L2
        else:
            allowed = max(FLOAT32_FLOOR_FACTOR * float(floor), FLOAT32_REL_L2_MIN)
        allowed_abs = None
        if name == arch.LOGITS_NAME:
            allowed_abs = atol if atol is not None else (FLOAT32_LOGITS_ATOL if dtype == "float32" else None)
        ok = bool(np.isfinite(d.rel_l2) and d.rel_l2 <= allowed and (allowed_abs is None or d.max_abs <= allowed_abs))
        rows.append(EndpointRow(name, list(a.shape), d.max_abs, d.rel_l2, d.cosine, floor, allowed, allowed_abs, ok))
    return rows


def _first_failure(rows: Sequence[EndpointRow]) -> Optional[str]:
    return next((r.name for r in rows if not r.passed), None)


def top_classes(logits: np.ndarray, labels: Sequence[str], k: int = TOP_K) -> List[TopClass]:
    x = np.asarray(logits, dtype=np.float64).reshape(-1)
    p = np.exp(x - x.max())
    p /= p.sum()
    order = np.argsort(-x, kind="stable")[:k]
    return [TopClass(int(i), labels[i] if i < len(labels) else f"class_{i}", float(x[i]), float(p[i])) for i in order]


# --------------------------------------------------------------------------- environment


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


def _resolve_tf_device(torch_device: torch.device, tf_device: Optional[str]) -> Tuple[str, Optional[str]]:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if tf_device is None:
        tf_device = "gpu" if torch_device.type == "cuda" and gpus else "cpu"
        note = ("TensorFlow sees no GPU: PyTorch ran on the GPU, TensorFlow on the CPU"
                if torch_device.type == "cuda" and not gpus else None)
        return tf_device, note
    if tf_device not in ("cpu", "gpu"):
        raise I3DConvertError(f"unknown TensorFlow device {tf_device!r}; use cpu or gpu")
    if tf_device == "gpu" and not gpus:
        raise I3DConvertError("TensorFlow device gpu requested but TensorFlow sees no GPU")
    return tf_device, None


def _device_info(torch_device: torch.device, tf_device: str, allow_tf32: bool) -> Dict[str, Any]:
    import tensorflow as tf

    info: Dict[str, Any] = {"torch": str(torch_device), "tensorflow": tf_device.upper()}
    if torch_device.type == "cuda":
        info["torch_gpu"] = torch.cuda.get_device_name(torch_device)
        info["torch_tf32"] = {"matmul": allow_tf32, "cudnn": allow_tf32}
    else:
        info["torch_tf32"] = "n/a (CPU)"
        info["torch_threads"] = torch.get_num_threads()
    if tf_device == "gpu":
        details = tf.config.experimental.get_device_details(tf.config.list_physical_devices("GPU")[0])
        info["tensorflow_gpu"] = details.get("device_name", "GPU:0")
        info["tensorflow_tf32"] = allow_tf32
    else:
        info["tensorflow_tf32"] = "n/a (CPU)"
    return info


# --------------------------------------------------------------------------- verify


def _demo_checkpoint(directory: Path, seed: int) -> Path:
    from i3d_convert.conversion.synthetic import write_synthetic_checkpoint

    return write_synthetic_checkpoint(directory / DEMO_RELEASE, DEMO_RELEASE, seed)


def _reference_from_state(state: Mapping[str, torch.Tensor], layout: str) -> Dict[str, np.ndarray]:
    """TF1-named variables of a state_dict, under the scope DeepMind's release of that kind uses."""
    from i3d_convert.names.layouts import from_layout
    from i3d_convert.names.tf1 import torch_to_tf_arrays

    native = from_layout(state, layout)
    in_channels, num_classes = _state_dict_classes(native, "native", "state_dict")
    scope = ("" if num_classes == arch.NUM_CLASSES_600 else
             "Flow/inception_i3d/" if in_channels == arch.FLOW_CHANNELS else "RGB/inception_i3d/")
    return torch_to_tf_arrays({k: v.detach().cpu().numpy() for k, v in native.items()}, scope=scope)


def verify(
    checkpoint: Optional[PathLike] = None,
    *,
    torch_weights: Optional[PathLike] = None,
    layout: str = "native",
    clip: Optional[PathLike] = None,
    frames: Optional[int] = None,
    device: str = "cpu",
    dtype: str = "float32",
    atol: Optional[float] = None,
    rtol: Optional[float] = None,
    bn_eps: float = arch.BN_EPS,
    torch_bn_eps: Optional[float] = None,
    pad: str = "tf_same",
    allow_tf32: bool = False,
    tf_device: Optional[str] = None,
    seed: int = DEFAULT_SEED,
    audit: bool = True,
    cache: Optional[MutableMapping] = None,
) -> VerifyReport:
    """Run PyTorch and TensorFlow on one clip and compare every endpoint.

    Args:
      checkpoint: TF checkpoint (TF1 name-based or TF2 object-based; prefix,
        ``.index`` or folder). None: with ``torch_weights``, TensorFlow runs on
        the weights of that file (a semantics-only audit); without, a seeded
        calibrated synthetic checkpoint with the names and shapes of
        ``rgb_imagenet`` is written to a temporary folder and used.
      torch_weights: a ``.safetensors``/``.pt`` state_dict to run on the PyTorch
        side instead of converting ``checkpoint``.
      layout: ``native`` (:class:`InceptionI3d`) or ``piergiaj``
        (:class:`PiergiajI3D`, run with ``torch_bn_eps`` and ``pad``).
      clip: None (seeded random clip), a ``.npy`` NTHWC clip or a video/GIF.
      frames: frames of the random clip (default 16) or the first frames of a file.
      device: PyTorch's device (``cpu`` or ``cuda``).
      dtype: ``float32`` or ``float64``, both sides.
      atol, rtol: override the logits max-|diff| and per-endpoint relative-L2
        allowances (see the module docstring for the defaults).
      bn_eps: the reference's batch-norm eps (DeepMind's 1e-3).
      torch_bn_eps: the PyTorch side's eps (default ``bn_eps``).
      pad: the PyTorch side's padding, ``tf_same`` or ``symmetric`` (piergiaj only).
      allow_tf32: allow TF32 on both sides (GPU only; off by default for parity).
      tf_device: ``cpu``/``gpu``; default: ``gpu`` when PyTorch runs on CUDA
        and TensorFlow sees a GPU, else ``cpu`` (the report says which ran where).
      seed: seed of the random clip and of the built-in synthetic checkpoint.
      audit: when the check fails with a non-default ``torch_bn_eps``/``pad``,
        re-run the PyTorch side with those reset to the reference's values to
        name the setting that causes the drift.
      cache: a dict reused across calls to skip repeated TensorFlow runs on the
        same weights, clip and settings (tests and batch audits).

    Returns a :class:`VerifyReport`; ``report.passed`` is the verdict.
    Raises :class:`I3DConvertError` for bad inputs.
    """
    timings: Dict[str, float] = {}
    started = time.perf_counter()
    if layout not in VERIFY_LAYOUTS:
        raise I3DConvertError(f"unknown layout {layout!r}; use one of {', '.join(VERIFY_LAYOUTS)}")
    if dtype not in DTYPES:
        raise I3DConvertError(f"unknown dtype {dtype!r}; use float32 or float64")
    if pad not in PAD_MODES:
        raise I3DConvertError(f"unknown padding {pad!r}; use tf_same or symmetric")
    for label, value in (("bn_eps", bn_eps), ("torch_bn_eps", torch_bn_eps), ("atol", atol), ("rtol", rtol)):
        if value is not None and not (np.isfinite(value) and value > 0):
            raise I3DConvertError(f"{label} must be a positive number, got {value}")
    torch_eps = bn_eps if torch_bn_eps is None else torch_bn_eps
    from i3d_convert.device import resolve_device
    from i3d_convert.conversion.releases import load_labels

    torch_device = resolve_device(device)
    from i3d_convert.reference import tf_runtime  # noqa: F401  (imports TensorFlow after torchvision; see its docstring)

    tf_dev, device_note = _resolve_tf_device(torch_device, tf_device)
    notes: List[str] = [device_note] if device_note else []
    timings["imports"] = time.perf_counter() - started

    with tempfile.TemporaryDirectory(prefix="i3d-verify-") as tmp:
        # -- weights of both sides
        t0 = time.perf_counter()
        if checkpoint is None and torch_weights is None:
            checkpoint = _demo_checkpoint(Path(tmp), seed)
            checkpoint_label = f"built-in synthetic checkpoint ({DEMO_RELEASE} names and shapes, seed {seed})"
            notes.append("synthetic weights: calibrated random weights, so the classes mean nothing")
            timings["synthetic_checkpoint"] = time.perf_counter() - t0
        else:
            checkpoint_label = str(checkpoint) if checkpoint is not None else "none"

        t0 = time.perf_counter()
        if torch_weights is not None:
            from i3d_convert.conversion.tf_to_torch import load_state_dict_file

            state = load_state_dict_file(torch_weights)
            torch_source = str(torch_weights)
        else:
            from i3d_convert.conversion.tf_to_torch import convert_checkpoint

            state = convert_checkpoint(checkpoint, layout=layout).state_dict  # type: ignore[arg-type]
            torch_source = f"{checkpoint} converted by i3d_convert ({layout} layout)"
        if checkpoint is not None:
            variables, kind = reference_variables(checkpoint)
            checkpoint_label += f" [{kind}]"
        else:
            variables = _reference_from_state(state, layout)
            notes.append("no TensorFlow checkpoint given: TensorFlow ran on the weights of the --torch file, "
                         "so this checks the port's semantics, not its weight conversion")
        timings["load_weights"] = time.perf_counter() - t0

        in_channels, num_classes = _state_dict_classes(state, layout, torch_source)
        array, input_info = load_input(clip, in_channels, frames, seed)
        _check_logits_input(array.shape, str(clip) if clip is not None else "random clip")
        run_clip = array.astype(dtype)
        input_info["dtype"] = dtype
        input_info["sha256"] = _sha256(run_clip)
        input_info["sha256_of"] = f"the little-endian {dtype} NTHWC array both sides ran on"
        weights_key = (hashlib.sha256(b"".join(
            name.encode() + np.ascontiguousarray(variables[name]).tobytes() for name in sorted(variables))
        ).hexdigest(), input_info["sha256"])

        # -- TensorFlow
        t0 = time.perf_counter()
        tf_out = _tf_run(variables, array, dtype, bn_eps, tf_dev, allow_tf32, cache, weights_key)
        timings[f"tensorflow_{dtype}"] = time.perf_counter() - t0
        floors = None
        if dtype == "float32":
            t0 = time.perf_counter()
            tf64 = _tf_run(variables, array, "float64", bn_eps, tf_dev, False, cache, weights_key)
            floors = {name: difference(tf_out[name], tf64[name]).rel_l2 for name in arch.ENDPOINTS}
            del tf64
            timings["tensorflow_float64_floor"] = time.perf_counter() - t0

        # -- PyTorch
        t0 = time.perf_counter()
        model = build_torch_model(state, layout, torch_eps, pad, torch_source)
        with _TorchTF32(allow_tf32):
            torch_out = _torch_run(model, array, dtype, torch_device)
        timings[f"torch_{dtype}"] = time.perf_counter() - t0

        rows = compare_endpoints(torch_out, tf_out, dtype, floors=floors, atol=atol, rtol=rtol)
        first = _first_failure(rows)
        labels = load_labels(num_classes)
        torch_logits = torch_out[arch.LOGITS_NAME]
        top_torch = [] if isinstance(torch_logits, str) else top_classes(torch_logits[0], labels)
        top_tf = top_classes(tf_out[arch.LOGITS_NAME][0], labels)
        del torch_out

        # -- cause search for a failing audit
        variants: List[AuditVariant] = []
        cause = None
        changed = [s for s, bad in (("bn_eps", torch_eps != bn_eps), ("pad", pad != "tf_same")) if bad]
        if first is not None and audit:
            t0 = time.perf_counter()
            variants, cause = _audit(state, layout, torch_eps, pad, bn_eps, changed, array, dtype, torch_device,
                                     allow_tf32, tf_out, floors, atol, rtol, torch_source)
            timings["audit"] = time.perf_counter() - t0

    timings["total"] = time.perf_counter() - started
    settings = {
        "bn_eps_tensorflow": bn_eps, "bn_eps_torch": torch_eps, "pad_torch": pad, "allow_tf32": allow_tf32,
        "atol": atol, "rtol": rtol,
        "tolerance": ("rtol given: relative L2 <= rtol at every endpoint" if rtol is not None else
                      f"relative L2 <= {FLOAT64_REL_L2:g} at every endpoint" if dtype == "float64" else
                      f"relative L2 <= max({FLOAT32_FLOOR_FACTOR:g} x floor, {FLOAT32_REL_L2_MIN:g}) at every "
                      f"endpoint; floor = TensorFlow float32 vs float64"),
        "logits_atol": atol if atol is not None else (FLOAT32_LOGITS_ATOL if dtype == "float32" else None),
    }
    return VerifyReport(
        passed=first is None, first_diverging=first, rows=rows, top_torch=top_torch, top_tf=top_tf,
        checkpoint=checkpoint_label, torch_weights=str(torch_weights) if torch_weights is not None else None,
        layout=layout, dtype=dtype, settings=settings,
        devices=_device_info(torch_device, tf_dev, allow_tf32), input=input_info, versions=_versions(),
        timings={k: round(v, 3) for k, v in timings.items()}, audit=variants, cause=cause, notes=notes,
    )


def _audit(state, layout, torch_eps, pad, bn_eps, changed, array, dtype, torch_device, allow_tf32, tf_out,
           floors, atol, rtol, source) -> Tuple[List[AuditVariant], str]:
    """Re-run the PyTorch side with each subset of the changed settings reset; explain the drift."""
    from itertools import combinations

    def run(eps: float, padding: str, reset: List[str]) -> AuditVariant:
        model = build_torch_model(state, layout, eps, padding, source)
        with _TorchTF32(allow_tf32):
            out = _torch_run(model, array, dtype, torch_device)
        rows = compare_endpoints(out, tf_out, dtype, floors=floors, atol=atol, rtol=rtol)
        logits = next(r for r in rows if r.name == arch.LOGITS_NAME)
        ratio = max((r.rel_l2 / r.allowed_rel_l2 if r.problem is None else float("inf")) for r in rows)
        return AuditVariant({"bn_eps": eps, "pad": padding}, reset, logits.rel_l2, ratio, _first_failure(rows),
                            _first_failure(rows) is None)

    if not changed:
        return [], ("the PyTorch side already uses DeepMind's settings (eps {:g}, TF 'SAME' padding): the drift "
                    "comes from the weights or the model code, not from a setting".format(bn_eps))
    variants = []
    for size in range(1, len(changed) + 1):
        for reset in combinations(changed, size):
            eps = bn_eps if "bn_eps" in reset else torch_eps
            padding = "tf_same" if "pad" in reset else pad
            variants.append(run(eps, padding, list(reset)))
    describe = {"bn_eps": f"batch-norm eps {torch_eps:g} (DeepMind: {bn_eps:g})",
                "pad": f"{pad} padding (DeepMind: TF 'SAME', extra pixel after)"}
    fixes = [v for v in variants if v.passed]
    if not fixes:
        return variants, ("even with " + " and ".join(describe[s].split(" (")[0] for s in changed) +
                          " reset to DeepMind's values the PyTorch side drifts: the weights or the model code "
                          "differ too")
    smallest = min(fixes, key=lambda v: len(v.reset))
    singles = {v.reset[0]: v for v in variants if len(v.reset) == 1}
    parts = []
    for name in changed:
        if name in singles:
            parts.append(f"resetting {describe[name]} alone gives logits rel L2 {singles[name].logits_rel_l2:.3g}"
                         f" ({'passes' if singles[name].passed else 'still fails'})")
    culprits = " and ".join(describe[s] for s in smallest.reset)
    return variants, f"caused by {culprits}; " + "; ".join(parts)


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
        raise I3DConvertError("plot must be .png, .svg or .pdf", path)
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


__all__ = [
    "AuditVariant", "EndpointRow", "TopClass", "VerifyReport", "build_torch_model", "compare_endpoints",
    "load_input", "plot_report", "reference_variables", "top_classes", "verify",
]
