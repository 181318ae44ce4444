"""DeepMind's I3D forward pass in plain ``tf.nn`` ops: the oracle of the parity tests.

:func:`tf_forward` runs :func:`i3d_convert.reference.network.inception_i3d`
with ``conv3d`` ('SAME'), ``max_pool3d`` ('SAME'), ``avg_pool3d`` ('VALID')
and ``batch_normalization``, in eager mode, on a name -> array dict of TF1
checkpoint variables. Written from the semantics of DeepMind's
``kinetics-i3d/i3d.py``, not from this package's PyTorch model.

float64: TensorFlow has no float64 kernels for ``MaxPool3D`` / ``AvgPool3D``,
so in float64 the pools are computed exactly by other ops (maxima and sums of
strided slices of an explicitly padded input). Max pooling is exact in any
dtype; the tests check the replacements against the native ops in float32.
"""

from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from i3d_convert.architecture import BN_EPS
from i3d_convert.reference.network import (
    ENDPOINTS,
    MissingVariableError,
    check_endpoint,
    check_logits_input,
    check_variables,
    detect_scope,
    in_channels_of,
    inception_i3d,
    needed_variables,
    same_pads,
)
from i3d_convert.reference.tf_runtime import tf, tf_dtype

def _max_pool3d_same_by_slices(x: tf.Tensor, ksize: Sequence[int], strides: Sequence[int]) -> tf.Tensor:
    """TF 'SAME' max pool as maxima of strided slices of a -inf padded input.

    Used for float64, which ``tf.nn.max_pool3d`` does not support. Padded
    positions are -inf, so they never win -- exactly as in the native op.
    """
    dims = [same_pads(int(n), k, s) for n, k, s in zip(x.shape[1:4], ksize, strides)]
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
    """Eager ``tf.nn`` backend for :func:`~i3d_convert.reference.network.inception_i3d`."""

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
        check_logits_input(net.shape)
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


def _checked_variables(variables: Mapping[str, np.ndarray], clip_channels: int, final_endpoint: str,
                       scope: Optional[str]) -> Tuple[Dict[str, np.ndarray], str]:
    """``({path without scope: array}, scope)``: validated, with every variable needed up to ``final_endpoint``."""
    scope_given = scope is not None
    scope = detect_scope(list(variables.keys()), scope)
    in_channels = in_channels_of(variables, scope)
    if clip_channels != in_channels:
        raise ValueError(f"clip has {clip_channels} channels but the checkpoint's first conv expects {in_channels}")
    checked, num_classes = check_variables(variables, scope, scope_given, in_channels)
    missing = [scope + path for path in needed_variables(in_channels, num_classes, final_endpoint)
               if path not in checked]
    if missing:
        raise MissingVariableError(
            f"checkpoint lacks {len(missing)} variable(s) needed up to {final_endpoint}: {missing[:5]}"
        )
    return checked, scope


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
    run_dtype = tf_dtype(dtype)
    check_endpoint(final_endpoint)
    clip = np.asarray(clip)
    if clip.ndim != 5:
        raise ValueError(f"clip must be [batch, time, height, width, channels], got shape {list(clip.shape)}")
    checked, found_scope = _checked_variables(variables, clip.shape[-1], final_endpoint, scope)
    ops = _TFOps(checked, run_dtype, bn_eps, found_scope)
    previous_tf32 = tf.config.experimental.tensor_float_32_execution_enabled()
    tf.config.experimental.enable_tensor_float_32_execution(bool(allow_tf32))
    try:
        with tf.device(_device_name(device)):
            net = tf.constant(np.asarray(clip, dtype=run_dtype.as_numpy_dtype))
            end_points = inception_i3d(ops, net, final_endpoint)
            return {name: value.numpy() for name, value in end_points.items()}
    finally:
        tf.config.experimental.enable_tensor_float_32_execution(previous_tf32)


__all__ = ["ENDPOINTS", "tf_forward"]
