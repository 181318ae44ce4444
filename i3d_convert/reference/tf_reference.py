"""An independent TensorFlow implementation of DeepMind's I3D forward pass.

This module is the *oracle* of the parity tests. It is written from the
semantics of ``InceptionI3d`` in DeepMind's ``kinetics-i3d/i3d.py`` (TF1,
Sonnet 1) and its Sonnet 2 port (``tf_v2/i3d.py``, kinetics-i3d PR #127), not
from this package's PyTorch model or its layer table: the network is written out
endpoint by endpoint below, twice:

* :func:`tf_forward` runs plain ``tf.nn`` ops (``conv3d`` with ``'SAME'``
  padding, ``max_pool3d`` ``'SAME'``, ``avg_pool3d`` ``'VALID'``,
  ``batch_normalization``) in eager mode on a name -> array dict of TF1
  checkpoint variables;
* :class:`SonnetI3D` is the same network as Sonnet 2 modules, with the module
  attribute names of the PR #127 port so that a ``tf.train.Checkpoint(model=...)``
  of it has that port's object-graph names
  (``model/Logits/logits/conv3d/w/.ATTRIBUTES/VARIABLE_VALUE``, ...).

The test-suite checks that the two agree to float64 rounding and that the
variable names and shapes this module expects are exactly those of DeepMind's
released checkpoints.

Importing this module imports TensorFlow; ``import i3d_convert`` does not.
Importing it also works around a crash of this environment (TF 2.21 with torch
2.14 / torchvision 0.29): once TensorFlow is loaded, loading Triton's native
library -- which ``import torchvision`` and ``import timm`` do through
``torch._dynamo`` -- segfaults. Loading it first is safe, so this module imports
``torchvision`` (or, without torchvision, ``triton``) *before* TensorFlow when
they are installed. See :func:`_preload_torch_natives`.

float64: TensorFlow has no float64 kernels for ``MaxPool3D`` / ``AvgPool3D``, so
in float64 the pools are computed exactly by other ops (``tf_forward``: maxima
and sums of strided slices of an explicitly padded input; ``SonnetI3D``:
``tf.extract_volume_patches``). Max pooling is exact in any dtype; the tests
check the replacements against the native ops in float32.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import warnings
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from i3d_convert.architecture import BN_EPS
from i3d_convert._import_order import preload_native_libraries, tensorflow_loaded_too_early
from i3d_convert.errors import MappingError


def _preload_torch_natives() -> None:
    """Load torchvision / Triton native code before TensorFlow (see :mod:`i3d_convert._import_order`)."""
    if tensorflow_loaded_too_early():
        # Too late to reorder; importing Triton now would itself crash.
        warnings.warn(
            "tensorflow was imported before i3d_convert.reference.tf_reference and before "
            "torchvision/triton; in this environment importing torchvision, timm "
            "or triton now can crash the process (SIGSEGV). Import "
            "i3d_convert (or torchvision) before tensorflow.",
            RuntimeWarning,
            stacklevel=3,
        )
        return
    preload_native_libraries(("torchvision", "triton"))


def _spec_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


_preload_torch_natives()

import tensorflow as tf  # noqa: E402  (must come after the preload)


def _enable_gpu_memory_growth() -> None:
    """Stop TensorFlow from reserving all GPU memory (torch shares the GPU in tests)."""
    try:
        for gpu in tf.config.list_physical_devices("GPU"):
            tf.config.experimental.set_memory_growth(gpu, True)
    except (RuntimeError, ValueError):  # already initialised: leave it as it is
        pass


_enable_gpu_memory_growth()

__all__ = [
    "ENDPOINTS",
    "MissingVariableError",
    "VariableShapeError",
    "UnexpectedVariableError",
    "detect_scope",
    "expected_tf1_variables",
    "tf_forward",
    "SonnetI3D",
    "save_tf2_checkpoint",
    "tf2_checkpoint_shapes",
]

#: DeepMind's ``VALID_ENDPOINTS`` minus ``Predictions`` (a softmax of Logits).
ENDPOINTS: Tuple[str, ...] = (
    "Conv3d_1a_7x7",
    "MaxPool3d_2a_3x3",
    "Conv3d_2b_1x1",
    "Conv3d_2c_3x3",
    "MaxPool3d_3a_3x3",
    "Mixed_3b",
    "Mixed_3c",
    "MaxPool3d_4a_3x3",
    "Mixed_4b",
    "Mixed_4c",
    "Mixed_4d",
    "Mixed_4e",
    "Mixed_4f",
    "MaxPool3d_5a_2x2",
    "Mixed_5b",
    "Mixed_5c",
    "Logits",
)

#: Optimizer slots stored next to variables in the Kinetics-600 checkpoint.
_SLOT_SUFFIX = "/Momentum"
#: A variable every I3D checkpoint has; used to find the scope prefix.
_ANCHOR = "Conv3d_1a_7x7/conv_3d/w"
#: Sonnet 1 ``snt.BatchNorm`` / Sonnet 2 EMA decay (only matters for training).
_BN_DECAY = 0.999
#: Sonnet 2 ExponentialMovingAverage step counter written by
#: :meth:`SonnetI3D.load_tf1_variables`: with ``decay ** counter == 0`` the
#: debiased EMA equals its ``hidden`` value, i.e. it continues exactly like
#: Sonnet 1's (non-debiased) moving averages if training resumes.
_EMA_COUNTER = 2**40


# --------------------------------------------------------------------------
# Errors


class MissingVariableError(MappingError, KeyError):
    """A variable the network needs is not in the checkpoint dict."""

    def __str__(self) -> str:  # KeyError would quote the message
        return Exception.__str__(self)


class VariableShapeError(MappingError, ValueError):
    """A checkpoint variable has the wrong shape."""


class UnexpectedVariableError(MappingError, ValueError):
    """A checkpoint has variables the network does not use (or an ambiguous scope)."""


# --------------------------------------------------------------------------
# The network, written out as in DeepMind's i3d.py. ``ops`` is a backend with
# ``unit`` (Unit3D: conv -> BN -> ReLU), ``max_pool``, ``concat`` and
# ``logits``; paths are TF1 variable scopes without the model prefix.


def _mixed(ops: Any, net: Any, scope: str, b0: int, b1a: int, b1b: int, b2a: int,
           b2b: int, b3: int, b2b_name: str = "Conv3d_0b_3x3") -> Any:
    branch_0 = ops.unit(net, f"{scope}/Branch_0/Conv3d_0a_1x1", b0, (1, 1, 1))
    branch_1 = ops.unit(net, f"{scope}/Branch_1/Conv3d_0a_1x1", b1a, (1, 1, 1))
    branch_1 = ops.unit(branch_1, f"{scope}/Branch_1/Conv3d_0b_3x3", b1b, (3, 3, 3))
    branch_2 = ops.unit(net, f"{scope}/Branch_2/Conv3d_0a_1x1", b2a, (1, 1, 1))
    branch_2 = ops.unit(branch_2, f"{scope}/Branch_2/{b2b_name}", b2b, (3, 3, 3))
    branch_3 = ops.max_pool(net, (3, 3, 3), (1, 1, 1))  # Branch_3/MaxPool3d_0a_3x3
    branch_3 = ops.unit(branch_3, f"{scope}/Branch_3/Conv3d_0b_1x1", b3, (1, 1, 1))
    return ops.concat([branch_0, branch_1, branch_2, branch_3])


def _inception_i3d(ops: Any, net: Any, final_endpoint: str) -> Dict[str, Any]:
    """Endpoints up to and including ``final_endpoint``, in order."""
    if final_endpoint not in ENDPOINTS:
        raise ValueError(f"unknown final_endpoint {final_endpoint!r}; expected one of {ENDPOINTS}")
    end_points: Dict[str, Any] = {}

    def done(name: str, value: Any) -> bool:
        end_points[name] = value
        return name == final_endpoint

    net = ops.unit(net, "Conv3d_1a_7x7", 64, (7, 7, 7), (2, 2, 2))
    if done("Conv3d_1a_7x7", net):
        return end_points
    net = ops.max_pool(net, (1, 3, 3), (1, 2, 2))
    if done("MaxPool3d_2a_3x3", net):
        return end_points
    net = ops.unit(net, "Conv3d_2b_1x1", 64, (1, 1, 1))
    if done("Conv3d_2b_1x1", net):
        return end_points
    net = ops.unit(net, "Conv3d_2c_3x3", 192, (3, 3, 3))
    if done("Conv3d_2c_3x3", net):
        return end_points
    net = ops.max_pool(net, (1, 3, 3), (1, 2, 2))
    if done("MaxPool3d_3a_3x3", net):
        return end_points
    net = _mixed(ops, net, "Mixed_3b", 64, 96, 128, 16, 32, 32)
    if done("Mixed_3b", net):
        return end_points
    net = _mixed(ops, net, "Mixed_3c", 128, 128, 192, 32, 96, 64)
    if done("Mixed_3c", net):
        return end_points
    net = ops.max_pool(net, (3, 3, 3), (2, 2, 2))
    if done("MaxPool3d_4a_3x3", net):
        return end_points
    net = _mixed(ops, net, "Mixed_4b", 192, 96, 208, 16, 48, 64)
    if done("Mixed_4b", net):
        return end_points
    net = _mixed(ops, net, "Mixed_4c", 160, 112, 224, 24, 64, 64)
    if done("Mixed_4c", net):
        return end_points
    net = _mixed(ops, net, "Mixed_4d", 128, 128, 256, 24, 64, 64)
    if done("Mixed_4d", net):
        return end_points
    net = _mixed(ops, net, "Mixed_4e", 112, 144, 288, 32, 64, 64)
    if done("Mixed_4e", net):
        return end_points
    net = _mixed(ops, net, "Mixed_4f", 256, 160, 320, 32, 128, 128)
    if done("Mixed_4f", net):
        return end_points
    net = ops.max_pool(net, (2, 2, 2), (2, 2, 2))
    if done("MaxPool3d_5a_2x2", net):
        return end_points
    # In Mixed_5b, Branch_2's 3x3 conv is named Conv3d_0a_3x3 (as in TF-slim).
    net = _mixed(ops, net, "Mixed_5b", 256, 160, 320, 32, 128, 128, b2b_name="Conv3d_0a_3x3")
    if done("Mixed_5b", net):
        return end_points
    net = _mixed(ops, net, "Mixed_5c", 384, 192, 384, 48, 128, 128)
    if done("Mixed_5c", net):
        return end_points
    net = ops.logits(net, "Logits/Conv3d_0c_1x1")
    done("Logits", net)
    return end_points


class _ShapeOps:
    """Runs :func:`_inception_i3d` on channel counts, recording variable shapes."""

    def __init__(self, num_classes: int, bn_shape: str) -> None:
        self.num_classes = num_classes
        self.bn_shape = bn_shape
        self.shapes: Dict[str, Tuple[int, ...]] = {}

    def _bn(self, channels: int) -> Tuple[int, ...]:
        return (channels,) if self.bn_shape == "vector" else (1, 1, 1, 1, channels)

    def unit(self, channels: int, path: str, out: int, kernel: Sequence[int],
             stride: Sequence[int] = (1, 1, 1)) -> int:
        self.shapes[f"{path}/conv_3d/w"] = (*kernel, channels, out)
        for stat in ("beta", "moving_mean", "moving_variance"):
            self.shapes[f"{path}/batch_norm/{stat}"] = self._bn(out)
        return out

    def max_pool(self, channels: int, ksize: Sequence[int], strides: Sequence[int]) -> int:
        return channels

    def concat(self, parts: List[int]) -> int:
        return sum(parts)

    def logits(self, channels: int, path: str) -> int:
        self.shapes[f"{path}/conv_3d/w"] = (1, 1, 1, channels, self.num_classes)
        self.shapes[f"{path}/conv_3d/b"] = (self.num_classes,)
        return self.num_classes


def expected_tf1_variables(
    in_channels: int = 3,
    num_classes: int = 400,
    scope: str = "RGB/inception_i3d/",
    bn_shape: str = "vector",
) -> Dict[str, Tuple[int, ...]]:
    """Name -> shape of every variable of a TF1 (Sonnet 1) I3D checkpoint.

    ``bn_shape`` is ``"vector"`` (``[C]``, the Kinetics-400 RGB/Flow
    checkpoints) or ``"rank5"`` (``[1, 1, 1, 1, C]``, the Kinetics-600 one,
    whose scope is ``""``). Optimizer slots are not listed.
    """
    if bn_shape not in ("vector", "rank5"):
        raise ValueError(f"bn_shape must be 'vector' or 'rank5', not {bn_shape!r}")
    ops = _ShapeOps(num_classes, bn_shape)
    _inception_i3d(ops, in_channels, "Logits")
    return {scope + name: shape for name, shape in ops.shapes.items()}


# --------------------------------------------------------------------------
# Checkpoint-dict handling (scope detection is shared; the rest is tf_forward's)


def detect_scope(names: Sequence[str], scope: Optional[str] = None) -> str:
    """The prefix before ``Conv3d_1a_7x7/conv_3d/w`` (``'RGB/inception_i3d/'``, ``''``...).

    With ``scope`` given, it is checked instead of detected. Raises
    :class:`MissingVariableError` when no prefix has that variable and
    :class:`UnexpectedVariableError` when several do (a two-stream dict: pass
    ``scope``).
    """
    if scope is not None:
        if scope and not scope.endswith("/"):
            scope += "/"
        if scope + _ANCHOR not in names:
            raise MissingVariableError(
                f"no variable {scope + _ANCHOR!r}: scope {scope!r} is not an I3D model in this checkpoint"
            )
        return scope
    found = sorted({n[: -len(_ANCHOR)] for n in names if n.endswith(_ANCHOR)})
    found = [p for p in found if p == "" or p.endswith("/")]
    if not found:
        raise MissingVariableError(
            f"no variable named '<scope>{_ANCHOR}': not an I3D checkpoint "
            f"({len(names)} variables, e.g. {sorted(names)[:3]})"
        )
    if len(found) > 1:
        raise UnexpectedVariableError(
            f"the checkpoint holds several I3D models (scopes {found}); pass scope=... to pick one"
        )
    return found[0]


def _check_variables(
    variables: Mapping[str, Any], scope: str, scope_given: bool, in_channels: int,
) -> Tuple[Dict[str, np.ndarray], int]:
    """Validate a checkpoint dict; return {path-without-scope: array} and num_classes.

    Every variable under ``scope`` must be a known I3D variable (or its
    ``/Momentum`` slot) with the right shape; with a detected scope, variables
    outside it are errors too. Batch-norm tensors may be ``[C]`` or
    ``[1, 1, 1, 1, C]``. Missing variables are reported when they are needed.
    """
    logits_b = variables.get(scope + "Logits/Conv3d_0c_1x1/conv_3d/b")
    logits_w = variables.get(scope + "Logits/Conv3d_0c_1x1/conv_3d/w")
    if logits_b is not None and np.ndim(logits_b) == 1:
        num_classes = int(np.shape(logits_b)[0])
    elif logits_w is not None and np.ndim(logits_w) == 5:
        num_classes = int(np.shape(logits_w)[-1])
    else:
        num_classes = 400
    expected = expected_tf1_variables(in_channels, num_classes, scope="", bn_shape="vector")
    out: Dict[str, np.ndarray] = {}
    unexpected: List[str] = []
    for name, value in variables.items():
        if not name.startswith(scope):
            if not scope_given:
                unexpected.append(name)
            continue
        path = name[len(scope):]
        if path.endswith(_SLOT_SUFFIX) and path[: -len(_SLOT_SUFFIX)] in expected:
            continue
        if path not in expected:
            unexpected.append(name)
            continue
        array = np.asarray(value)
        want = expected[path]
        ok = array.shape == want
        if not ok and "/batch_norm/" in path:
            ok = array.shape == (1, 1, 1, 1) + want
        if not ok:
            raise VariableShapeError(
                f"variable {name!r} has shape {list(array.shape)}, expected {list(want)}"
                + (f" (or {[1, 1, 1, 1, *want]})" if "/batch_norm/" in path else "")
            )
        out[path] = array.reshape(want)
    if unexpected:
        raise UnexpectedVariableError(
            f"{len(unexpected)} checkpoint variable(s) are not part of I3D (scope {scope!r}): "
            f"{sorted(unexpected)[:5]}"
        )
    return out, num_classes


def _in_channels(variables: Mapping[str, Any], scope: str) -> int:
    w = variables[scope + _ANCHOR]
    if np.ndim(w) != 5:
        raise VariableShapeError(
            f"variable {scope + _ANCHOR!r} has shape {list(np.shape(w))}, expected [7, 7, 7, in, 64]"
        )
    return int(np.shape(w)[3])


def _tf_dtype(dtype: Any) -> tf.DType:
    try:
        name = dtype.name if isinstance(dtype, tf.DType) else np.dtype(dtype).name
    except TypeError:
        name = None
    if name not in ("float32", "float64"):
        raise ValueError(f"dtype must be 'float32' or 'float64', not {dtype!r}")
    return tf.as_dtype(name)


def _same_pads(size: int, k: int, s: int) -> Tuple[int, int, int]:
    """TF 'SAME': (output size, pad before, pad after); the extra pad goes after."""
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return out, total // 2, total - total // 2


def _logits_input_check(shape: Sequence[int]) -> None:
    if shape[1] < 2 or shape[2] != 7 or shape[3] != 7:
        raise ValueError(
            "the Logits average pool ([2, 7, 7], 'VALID', then a spatial squeeze) needs a "
            f"Mixed_5c map of at least 2x7x7 with exactly 7x7 space, got {list(shape[1:4])} "
            "(DeepMind's inputs are 224x224 with >= 9 frames); use final_endpoint='Mixed_5c' "
            "for other sizes"
        )


# --------------------------------------------------------------------------
# Plain tf.nn implementation


def _max_pool3d_same_by_slices(x: tf.Tensor, ksize: Sequence[int], strides: Sequence[int]) -> tf.Tensor:
    """TF 'SAME' max pool as maxima of strided slices of a -inf padded input.

    Used for float64, which ``tf.nn.max_pool3d`` does not support. Padded
    positions are -inf, so they never win -- exactly as in the native op.
    """
    dims = [_same_pads(int(n), k, s) for n, k, s in zip(x.shape[1:4], ksize, strides)]
    x = tf.pad(x, [[0, 0]] + [[b, a] for _, b, a in dims] + [[0, 0]],
               constant_values=tf.constant(-np.inf, x.dtype))
    (ot, _, _), (oh, _, _), (ow, _, _) = dims
    st, sh, sw = strides
    result = None
    for dt in range(ksize[0]):
        for dh in range(ksize[1]):
            for dw in range(ksize[2]):
                part = x[:, dt:dt + (ot - 1) * st + 1:st, dh:dh + (oh - 1) * sh + 1:sh,
                         dw:dw + (ow - 1) * sw + 1:sw, :]
                result = part if result is None else tf.maximum(result, part)
    return result


def _avg_pool3d_valid_by_slices(x: tf.Tensor, ksize: Sequence[int]) -> tf.Tensor:
    """Stride-1 'VALID' average pool as a sum of slices (float64 fallback)."""
    ot, oh, ow = (int(n) - k + 1 for n, k in zip(x.shape[1:4], ksize))
    total = None
    for dt in range(ksize[0]):
        for dh in range(ksize[1]):
            for dw in range(ksize[2]):
                part = x[:, dt:dt + ot, dh:dh + oh, dw:dw + ow, :]
                total = part if total is None else total + part
    return total / tf.constant(float(np.prod(ksize)), x.dtype)


class _TFOps:
    """Eager ``tf.nn`` backend for :func:`_inception_i3d`."""

    def __init__(self, variables: Mapping[str, np.ndarray], dtype: tf.DType, bn_eps: float,
                 scope: str) -> None:
        self.variables = variables
        self.dtype = dtype
        self.bn_eps = bn_eps
        self.scope = scope

    def _get(self, path: str) -> tf.Tensor:
        if path not in self.variables:
            raise MissingVariableError(f"checkpoint has no variable {self.scope + path!r}")
        return tf.constant(np.asarray(self.variables[path], dtype=self.dtype.as_numpy_dtype))

    def unit(self, net: tf.Tensor, path: str, out: int, kernel: Sequence[int],
             stride: Sequence[int] = (1, 1, 1)) -> tf.Tensor:
        w = self._get(f"{path}/conv_3d/w")
        net = tf.nn.conv3d(net, w, strides=[1, *stride, 1], padding="SAME")
        # Sonnet 1 BatchNorm at inference (no scale): batch_normalization with
        # the moving statistics, (x - mean) / sqrt(var + eps) + beta.
        net = tf.nn.batch_normalization(
            net,
            mean=self._get(f"{path}/batch_norm/moving_mean"),
            variance=self._get(f"{path}/batch_norm/moving_variance"),
            offset=self._get(f"{path}/batch_norm/beta"),
            scale=None,
            variance_epsilon=self.bn_eps,
        )
        return tf.nn.relu(net)

    def max_pool(self, net: tf.Tensor, ksize: Sequence[int], strides: Sequence[int]) -> tf.Tensor:
        if net.dtype == tf.float64:
            return _max_pool3d_same_by_slices(net, ksize, strides)
        return tf.nn.max_pool3d(net, ksize=[1, *ksize, 1], strides=[1, *strides, 1], padding="SAME")

    def concat(self, parts: List[tf.Tensor]) -> tf.Tensor:
        return tf.concat(parts, axis=4)

    def logits(self, net: tf.Tensor, path: str) -> tf.Tensor:
        _logits_input_check(net.shape)
        if net.dtype == tf.float64:
            net = _avg_pool3d_valid_by_slices(net, (2, 7, 7))
        else:
            net = tf.nn.avg_pool3d(net, ksize=[1, 2, 7, 7, 1], strides=[1, 1, 1, 1, 1], padding="VALID")
        # dropout: identity at inference (keep_prob 1.0)
        w = self._get(f"{path}/conv_3d/w")
        b = self._get(f"{path}/conv_3d/b")
        net = tf.nn.conv3d(net, w, strides=[1, 1, 1, 1, 1], padding="SAME") + b
        net = tf.squeeze(net, [2, 3])
        return tf.reduce_mean(net, axis=1)


def _device_name(device: str) -> str:
    if device == "cpu":
        return "/CPU:0"
    if device == "gpu":
        if not tf.config.list_physical_devices("GPU"):
            raise ValueError("device='gpu' but TensorFlow sees no GPU")
        return "/GPU:0"
    raise ValueError(f"device must be 'cpu' or 'gpu', not {device!r}")


def tf_forward(
    variables: Mapping[str, np.ndarray],
    clip: np.ndarray,
    *,
    dtype: str = "float32",
    bn_eps: float = BN_EPS,
    device: str = "cpu",
    allow_tf32: bool = False,
    final_endpoint: str = "Logits",
    scope: Optional[str] = None,
) -> Dict[str, np.ndarray]:
    """DeepMind's I3D inference forward pass with plain ``tf.nn`` ops.

    Args:
      variables: TF1 checkpoint variables by name (any of DeepMind's schemas:
        ``RGB/inception_i3d/...``, ``Flow/inception_i3d/...`` or unscoped with
        ``[1, 1, 1, 1, C]`` batch-norm tensors and ``/Momentum`` slots, which
        are ignored).
      clip: ``[batch, time, height, width, channels]``, values in [-1, 1];
        channels must match the checkpoint (3 RGB, 2 Flow).
      dtype: ``"float32"`` or ``"float64"``; the variables and the clip are
        cast and the whole network runs in it.
      bn_eps: batch-norm epsilon (Sonnet 1 default 1e-3).
      device: ``"cpu"`` or ``"gpu"`` (placed with ``tf.device``; an error when
        no GPU is visible).
      allow_tf32: TF32 matmul/conv on Ampere+ GPUs; off by default. The
        process-wide TF setting is restored afterwards.
      final_endpoint: last endpoint to compute. ``"Logits"`` (default) needs a
        Mixed_5c map of >= 2x7x7 with 7x7 space (224x224 input, >= 9 frames)
        and raises ``ValueError`` otherwise; for smaller clips stop at
        ``"Mixed_5c"`` or earlier.
      scope: the variable-name prefix; detected when ``None``. Give it to pick
        one stream from a dict that holds both (other names are then ignored).

    Returns:
      Endpoint name -> array (NTHWC; ``"Logits"`` is ``[batch, num_classes]``),
      for every endpoint up to ``final_endpoint``, in network order.

    Raises:
      MissingVariableError (a ``KeyError``) for a missing variable;
      VariableShapeError / UnexpectedVariableError (``ValueError``) for a wrong
      shape or a name that is not part of I3D; ``ValueError`` for a bad clip,
      dtype, device or endpoint.
    """
    tf_dtype = _tf_dtype(dtype)
    if final_endpoint not in ENDPOINTS:
        raise ValueError(f"unknown final_endpoint {final_endpoint!r}; expected one of {ENDPOINTS}")
    clip = np.asarray(clip)
    if clip.ndim != 5:
        raise ValueError(f"clip must be [batch, time, height, width, channels], got shape {list(clip.shape)}")
    scope_given = scope is not None
    scope = detect_scope(list(variables.keys()), scope)
    in_channels = _in_channels(variables, scope)
    if clip.shape[-1] != in_channels:
        raise ValueError(
            f"clip has {clip.shape[-1]} channels but the checkpoint's first conv expects {in_channels}"
        )
    checked, num_classes = _check_variables(variables, scope, scope_given, in_channels)
    needed = _ShapeOps(num_classes, "vector")
    _inception_i3d(needed, in_channels, final_endpoint)
    missing = [scope + path for path in needed.shapes if path not in checked]
    if missing:
        raise MissingVariableError(
            f"checkpoint lacks {len(missing)} variable(s) needed up to {final_endpoint}: {missing[:5]}"
        )
    ops = _TFOps(checked, tf_dtype, bn_eps, scope)
    previous_tf32 = tf.config.experimental.tensor_float_32_execution_enabled()
    tf.config.experimental.enable_tensor_float_32_execution(bool(allow_tf32))
    try:
        with tf.device(_device_name(device)):
            net = tf.constant(np.asarray(clip, dtype=tf_dtype.as_numpy_dtype))
            end_points = _inception_i3d(ops, net, final_endpoint)
            return {name: value.numpy() for name, value in end_points.items()}
    finally:
        tf.config.experimental.enable_tensor_float_32_execution(previous_tf32)


# --------------------------------------------------------------------------
# Sonnet 2 implementation (module layout of kinetics-i3d PR #127, tf_v2/i3d.py)

try:
    import sonnet as snt
except ImportError:  # pragma: no cover - dm-sonnet is an optional test dependency
    snt = None

_SonnetModule: Any = snt.Module if snt is not None else object


def _require_sonnet() -> None:
    if snt is None:
        raise ImportError("SonnetI3D needs dm-sonnet 2 (pip install dm-sonnet)")


def _pool_patches(x: tf.Tensor, ksize: Sequence[int], strides: Sequence[int]) -> tf.Tensor:
    """[B, T', H', W', kT*kH*kW, C] windows of ``x`` ('VALID', via extract_volume_patches)."""
    patches = tf.extract_volume_patches(x, ksizes=[1, *ksize, 1], strides=[1, *strides, 1], padding="VALID")
    shape = tf.shape(patches)
    return tf.reshape(patches, tf.concat([shape[:4], [int(np.prod(ksize)), x.shape[-1]]], axis=0))


def _sonnet_max_pool(x: tf.Tensor, ksize: Sequence[int], strides: Sequence[int]) -> tf.Tensor:
    """``tf.nn.max_pool3d`` 'SAME'; float64 (no native kernel): -inf padding + patches."""
    if x.dtype != tf.float64:
        return tf.nn.max_pool3d(x, ksize=[1, *ksize, 1], strides=[1, *strides, 1], padding="SAME")
    paddings = [[0, 0]]
    for size, k, s in zip(x.shape[1:4], ksize, strides):
        out = -(-int(size) // s)
        total = max((out - 1) * s + k - int(size), 0)
        paddings.append([total // 2, total - total // 2])
    paddings.append([0, 0])
    x = tf.pad(x, paddings, constant_values=tf.constant(-np.inf, tf.float64))
    return tf.reduce_max(_pool_patches(x, ksize, strides), axis=4)


def _sonnet_avg_pool_logits(x: tf.Tensor) -> tf.Tensor:
    if x.dtype != tf.float64:
        return tf.nn.avg_pool3d(x, ksize=[1, 2, 7, 7, 1], strides=[1, 1, 1, 1, 1], padding="VALID")
    return tf.reduce_mean(_pool_patches(x, (2, 7, 7), (1, 1, 1)), axis=4)


class Unit3D(_SonnetModule):
    """Conv3D ('SAME', no bias) -> BatchNorm (offset only) -> activation.

    As in the PR #127 port, ``batch_norm`` exists even when unused (Logits), so
    the object graph has the same nodes.
    """

    def __init__(self, output_channels: int, kernel_shape: Sequence[int] = (1, 1, 1),
                 stride: Sequence[int] = (1, 1, 1),
                 activation_fn: Optional[Callable[[tf.Tensor], tf.Tensor]] = tf.nn.relu,
                 use_batch_norm: bool = True, use_bias: bool = False, bn_eps: float = BN_EPS,
                 name: str = "unit_3d") -> None:
        _require_sonnet()
        super().__init__(name=name)
        self.tf1_name = name
        self.use_batch_norm = use_batch_norm
        self._activation_fn = activation_fn
        self.conv3d = snt.Conv3D(output_channels=output_channels, kernel_shape=list(kernel_shape),
                                 stride=list(stride), padding="SAME", with_bias=use_bias,
                                 name="conv_3d")
        self.batch_norm = snt.BatchNorm(create_scale=False, create_offset=True,
                                        decay_rate=_BN_DECAY, eps=bn_eps)

    def __call__(self, net: tf.Tensor, is_training: bool = False) -> tf.Tensor:
        net = self.conv3d(net)
        if self.use_batch_norm:
            net = self.batch_norm(net, is_training=is_training, test_local_stats=False)
        if self._activation_fn is not None:
            net = self._activation_fn(net)
        return net


class MixedLayerBranch(_SonnetModule):
    """``branch_b(branch_a(x))``; a missing ``branch_a`` is the 3x3x3 stride-1 max pool."""

    def __init__(self, name: str, branch_a: Optional[Unit3D], branch_b: Optional[Unit3D]) -> None:
        _require_sonnet()
        super().__init__(name=name)
        if branch_a is not None:
            self.branch_a = branch_a
        if branch_b is not None:
            self.branch_b = branch_b

    def __call__(self, net: tf.Tensor, is_training: bool = False) -> tf.Tensor:
        if hasattr(self, "branch_a"):
            net = self.branch_a(net, is_training)
        else:  # MaxPool3d_0a_3x3
            net = _sonnet_max_pool(net, (3, 3, 3), (1, 1, 1))
        if hasattr(self, "branch_b"):
            net = self.branch_b(net, is_training)
        return net

    def units(self) -> List[Unit3D]:
        return [getattr(self, a) for a in ("branch_a", "branch_b") if hasattr(self, a)]


class MixedLayer(_SonnetModule):
    """Inception block: four branches concatenated on channels."""

    def __init__(self, name: str, b0: int, b1a: int, b1b: int, b2a: int, b2b: int, b3: int,
                 bn_eps: float = BN_EPS, branch_2_b_name: str = "Conv3d_0b_3x3") -> None:
        _require_sonnet()
        super().__init__(name=name)
        self.branch_0 = MixedLayerBranch(
            "Branch_0", Unit3D(b0, (1, 1, 1), bn_eps=bn_eps, name="Conv3d_0a_1x1"), None)
        self.branch_1 = MixedLayerBranch(
            "Branch_1", Unit3D(b1a, (1, 1, 1), bn_eps=bn_eps, name="Conv3d_0a_1x1"),
            Unit3D(b1b, (3, 3, 3), bn_eps=bn_eps, name="Conv3d_0b_3x3"))
        self.branch_2 = MixedLayerBranch(
            "Branch_2", Unit3D(b2a, (1, 1, 1), bn_eps=bn_eps, name="Conv3d_0a_1x1"),
            Unit3D(b2b, (3, 3, 3), bn_eps=bn_eps, name=branch_2_b_name))
        self.branch_3 = MixedLayerBranch(
            "Branch_3", None, Unit3D(b3, (1, 1, 1), bn_eps=bn_eps, name="Conv3d_0b_1x1"))

    def branches(self) -> List[MixedLayerBranch]:
        return [self.branch_0, self.branch_1, self.branch_2, self.branch_3]

    def __call__(self, net: tf.Tensor, is_training: bool = False) -> tf.Tensor:
        return tf.concat([b(net, is_training) for b in self.branches()], 4)


class Logits(_SonnetModule):
    """avg pool [2, 7, 7] 'VALID' -> (dropout: identity) -> 1x1x1 conv + bias -> squeeze -> mean over time."""

    def __init__(self, num_classes: int, bn_eps: float = BN_EPS, name: str = "Logits") -> None:
        _require_sonnet()
        super().__init__(name=name)
        self.logits = Unit3D(num_classes, (1, 1, 1), activation_fn=None, use_batch_norm=False,
                             use_bias=True, bn_eps=bn_eps, name="Conv3d_0c_1x1")

    def __call__(self, net: tf.Tensor, is_training: bool = False) -> tf.Tensor:
        _logits_input_check(net.shape)
        net = _sonnet_avg_pool_logits(net)
        net = self.logits(net, is_training)
        net = tf.squeeze(net, [2, 3], name="SpatialSqueeze")
        return tf.reduce_mean(net, axis=1)


class SonnetI3D(_SonnetModule):
    """DeepMind's I3D as Sonnet 2 modules, attribute names as in kinetics-i3d PR #127.

    Differences from that port, on purpose: batch norm uses ``bn_eps``
    (default 1e-3, Sonnet 1's default with which the checkpoints were trained;
    the port left Sonnet 2's 1e-5), ``is_training`` is a call argument,
    dropout is left out (identity at inference) and float64 runs (pools fall
    back to exact non-native ops).
    """

    VALID_ENDPOINTS = ENDPOINTS

    def __init__(self, num_classes: int = 400, bn_eps: float = BN_EPS,
                 name: str = "inception_i3d") -> None:
        _require_sonnet()
        super().__init__(name=name)
        self.num_classes = num_classes
        self.Conv3d_1a_7x7 = Unit3D(64, (7, 7, 7), (2, 2, 2), bn_eps=bn_eps, name="Conv3d_1a_7x7")
        self.Conv3d_2b_1x1 = Unit3D(64, (1, 1, 1), bn_eps=bn_eps, name="Conv3d_2b_1x1")
        self.Conv3d_2c_3x3 = Unit3D(192, (3, 3, 3), bn_eps=bn_eps, name="Conv3d_2c_3x3")
        self.Mixed_3b = MixedLayer("Mixed_3b", 64, 96, 128, 16, 32, 32, bn_eps)
        self.Mixed_3c = MixedLayer("Mixed_3c", 128, 128, 192, 32, 96, 64, bn_eps)
        self.Mixed_4b = MixedLayer("Mixed_4b", 192, 96, 208, 16, 48, 64, bn_eps)
        self.Mixed_4c = MixedLayer("Mixed_4c", 160, 112, 224, 24, 64, 64, bn_eps)
        self.Mixed_4d = MixedLayer("Mixed_4d", 128, 128, 256, 24, 64, 64, bn_eps)
        self.Mixed_4e = MixedLayer("Mixed_4e", 112, 144, 288, 32, 64, 64, bn_eps)
        self.Mixed_4f = MixedLayer("Mixed_4f", 256, 160, 320, 32, 128, 128, bn_eps)
        self.Mixed_5b = MixedLayer("Mixed_5b", 256, 160, 320, 32, 128, 128, bn_eps,
                                   branch_2_b_name="Conv3d_0a_3x3")
        self.Mixed_5c = MixedLayer("Mixed_5c", 384, 192, 384, 48, 128, 128, bn_eps)
        self.Logits = Logits(num_classes, bn_eps, name="Logits")

    _POOLS = {
        "MaxPool3d_2a_3x3": ((1, 3, 3), (1, 2, 2)),
        "MaxPool3d_3a_3x3": ((1, 3, 3), (1, 2, 2)),
        "MaxPool3d_4a_3x3": ((3, 3, 3), (2, 2, 2)),
        "MaxPool3d_5a_2x2": ((2, 2, 2), (2, 2, 2)),
    }

    def __call__(self, inputs: tf.Tensor, is_training: bool = False,
                 final_endpoint: str = "Logits") -> Tuple[tf.Tensor, Dict[str, tf.Tensor]]:
        """Returns (output at ``final_endpoint``, {endpoint: tensor} up to it)."""
        if final_endpoint not in ENDPOINTS:
            raise ValueError(f"unknown final_endpoint {final_endpoint!r}; expected one of {ENDPOINTS}")
        net = inputs
        end_points: Dict[str, tf.Tensor] = {}
        for name in ENDPOINTS:
            if name in self._POOLS:
                net = _sonnet_max_pool(net, *self._POOLS[name])
            else:
                net = getattr(self, name)(net, is_training)
            end_points[name] = net
            if name == final_endpoint:
                break
        return net, end_points

    # -- variables --------------------------------------------------------

    def build(self, in_channels: int, dtype: Any = "float32") -> None:
        """Create all variables (Sonnet creates them on first call) cheaply."""
        tf_dtype = _tf_dtype(dtype)
        self(tf.zeros([1, 1, 1, 1, in_channels], tf_dtype), final_endpoint="Mixed_5c")
        self.Logits.logits(tf.zeros([1, 1, 1, 1, 1024], tf_dtype))

    @property
    def is_built(self) -> bool:
        return hasattr(self.Conv3d_1a_7x7.conv3d, "w")

    def tf1_units(self) -> List[Tuple[str, Unit3D]]:
        """(TF1 scope without the model prefix, unit) for every Unit3D."""
        units = [(n, getattr(self, n)) for n in ("Conv3d_1a_7x7", "Conv3d_2b_1x1", "Conv3d_2c_3x3")]
        for mixed in ("Mixed_3b", "Mixed_3c", "Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e",
                      "Mixed_4f", "Mixed_5b", "Mixed_5c"):
            for index, branch in enumerate(getattr(self, mixed).branches()):
                for unit in branch.units():
                    units.append((f"{mixed}/Branch_{index}/{unit.tf1_name}", unit))
        units.append(("Logits/Conv3d_0c_1x1", self.Logits.logits))
        return units

    def load_tf1_variables(self, variables: Mapping[str, np.ndarray], *, scope: Optional[str] = None,
                           dtype: Any = None) -> None:
        """Assign a TF1 (Sonnet 1) checkpoint dict by name, strictly.

        Any of DeepMind's schemas (scope detected unless given; ``[1,1,1,1,C]``
        batch-norm tensors reshaped; ``/Momentum`` slots of used variables
        ignored). Every module variable is written exactly once: conv ``w``/``b``,
        batch-norm ``offset`` (beta), ``moving_mean``/``moving_variance``
        ``average``; the derived state is set too (``scale`` = 1, EMA
        ``hidden`` = average, EMA ``counter`` = 2**40 so ``decay**counter`` is
        0; the unused Logits batch norm's counters = 0). Every checkpoint
        variable must be used. Builds the module (in ``dtype``, default
        float32) if needed. Nothing is assigned when a check fails.
        """
        scope_given = scope is not None
        scope = detect_scope(list(variables.keys()), scope)
        in_channels = _in_channels(variables, scope)
        if not self.is_built:
            self.build(in_channels, "float32" if dtype is None else dtype)
        elif dtype is not None and self.Conv3d_1a_7x7.conv3d.w.dtype != _tf_dtype(dtype):
            raise ValueError(f"module was built in {self.Conv3d_1a_7x7.conv3d.w.dtype.name}, not {dtype}")

        plan: List[Tuple[Any, np.ndarray]] = []
        used: set = set()

        def take(name: str, var: Any, batch_norm: bool = False) -> None:
            full = scope + name
            if full not in variables:
                raise MissingVariableError(f"checkpoint has no variable {full!r}")
            value = np.asarray(variables[full])
            want = tuple(var.shape)
            channels = want[-1]
            ok = value.shape == want or (batch_norm and value.shape in ((channels,), (1, 1, 1, 1, channels)))
            if not ok:
                raise VariableShapeError(
                    f"variable {full!r} has shape {list(value.shape)}, expected {list(want)}")
            used.add(full)
            plan.append((var, value.reshape(want)))

        for path, unit in self.tf1_units():
            take(f"{path}/conv_3d/w", unit.conv3d.w)
            if unit.conv3d.with_bias:
                take(f"{path}/conv_3d/b", unit.conv3d.b)
            bn = unit.batch_norm
            if unit.use_batch_norm:
                take(f"{path}/batch_norm/beta", bn.offset, True)
                plan.append((bn.scale, np.ones(bn.scale.shape)))
                for stat in ("moving_mean", "moving_variance"):
                    ema = getattr(bn, stat)
                    take(f"{path}/batch_norm/{stat}", ema.average, True)
                    plan.append((ema._hidden, plan[-1][1]))  # pylint: disable=protected-access
                    plan.append((ema._counter, np.array(_EMA_COUNTER)))  # pylint: disable=protected-access
            else:
                for ema in (bn.moving_mean, bn.moving_variance):
                    plan.append((ema._counter, np.array(0)))  # pylint: disable=protected-access

        unused = []
        for name in variables:
            if name in used:
                continue
            if name.endswith(_SLOT_SUFFIX) and name[: -len(_SLOT_SUFFIX)] in used:
                continue
            if scope_given and not name.startswith(scope):
                continue
            unused.append(name)
        if unused:
            raise UnexpectedVariableError(
                f"{len(unused)} checkpoint variable(s) are not part of I3D (scope {scope!r}): "
                f"{sorted(unused)[:5]}"
            )
        planned = [var.ref() for var, _ in plan]
        if len(planned) != len(set(planned)) or set(planned) != {v.ref() for v in self.variables}:
            raise RuntimeError(
                "internal error: the load plan does not cover every module variable exactly once")
        for var, value in plan:
            var.assign(np.asarray(value, dtype=var.dtype.as_numpy_dtype))

    @classmethod
    def from_tf1_variables(cls, variables: Mapping[str, np.ndarray], *, dtype: Any = "float32",
                           bn_eps: float = BN_EPS, scope: Optional[str] = None) -> "SonnetI3D":
        """A built and loaded module; ``num_classes`` from the Logits bias."""
        found = detect_scope(list(variables.keys()), scope)
        bias_name = found + "Logits/Conv3d_0c_1x1/conv_3d/b"
        bias = variables.get(bias_name)
        if bias is None:
            raise MissingVariableError(f"checkpoint has no variable {bias_name!r}")
        module = cls(num_classes=int(np.shape(bias)[0]), bn_eps=bn_eps)
        module.build(_in_channels(variables, found), dtype)
        module.load_tf1_variables(variables, scope=scope)
        return module


def save_tf2_checkpoint(module: Any, prefix: str) -> str:
    """``tf.train.Checkpoint(model=module).write(prefix)``: a TF2 object-based
    checkpoint like the PR #127 port's (names ``model/<attr path>/.ATTRIBUTES/VARIABLE_VALUE``).
    Returns the written prefix."""
    return tf.train.Checkpoint(model=module).write(prefix)


def tf2_checkpoint_shapes(path: str) -> Dict[str, Tuple[int, ...]]:
    """Name -> shape of every tensor in a TF checkpoint (``tf.train.list_variables``)."""
    return {name: tuple(shape) for name, shape in tf.train.list_variables(path)}
