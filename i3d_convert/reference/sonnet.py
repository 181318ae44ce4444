"""DeepMind's I3D as Sonnet 2 modules, with the module layout of kinetics-i3d PR #127 (``tf_v2/i3d.py``).

:class:`SonnetI3D` has the port's attribute names, so a
``tf.train.Checkpoint(model=...)`` of it has that port's object-graph names
(``model/Logits/logits/conv3d/w/.ATTRIBUTES/VARIABLE_VALUE``, ...). The
network is :mod:`i3d_convert.reference.network`'s; the tests check that it
agrees with :func:`i3d_convert.reference.tf_forward.tf_forward` to float64
rounding. In float64 (no native ``MaxPool3D`` / ``AvgPool3D`` kernels) the
pools are computed exactly with ``tf.extract_volume_patches``.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Set, Tuple

import numpy as np

from i3d_convert.architecture import BN_EPS
from i3d_convert.reference.network import (
    CONVS,
    ENDPOINTS,
    LOGITS_CONV,
    MIXED,
    POOLS,
    SLOT_SUFFIX,
    MissingVariableError,
    MixedChannels,
    UnexpectedVariableError,
    VariableShapeError,
    branch_2_b_name,
    check_endpoint,
    check_logits_input,
    detect_scope,
    in_channels_of,
    same_pads,
)
from i3d_convert.reference.tf_runtime import tf, tf_dtype

try:
    import sonnet as snt
except ImportError:  # pragma: no cover - dm-sonnet is an optional test dependency
    snt = None

_SonnetModule: Any = snt.Module if snt is not None else object

#: Sonnet 1 ``snt.BatchNorm`` / Sonnet 2 EMA decay (only matters for training).
_BN_DECAY = 0.999
#: Sonnet 2 ExponentialMovingAverage step counter written by
#: :meth:`SonnetI3D.load_tf1_variables`: with ``decay ** counter == 0`` the
#: debiased EMA equals its ``hidden`` value, i.e. it continues exactly like
#: Sonnet 1's (non-debiased) moving averages if training resumes.
_EMA_COUNTER = 2**40


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
    paddings = [[0, 0]] + [list(same_pads(int(size), k, s)[1:]) for size, k, s in zip(x.shape[1:4], ksize, strides)]
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

    def __init__(self, name: str, channels: MixedChannels, bn_eps: float = BN_EPS) -> None:
        _require_sonnet()
        super().__init__(name=name)
        c = channels

        def unit(out: int, kernel: int, unit_name: str) -> Unit3D:
            return Unit3D(out, (kernel,) * 3, bn_eps=bn_eps, name=unit_name)

        self.branch_0 = MixedLayerBranch("Branch_0", unit(c.b0, 1, "Conv3d_0a_1x1"), None)
        self.branch_1 = MixedLayerBranch("Branch_1", unit(c.b1a, 1, "Conv3d_0a_1x1"), unit(c.b1b, 3, "Conv3d_0b_3x3"))
        self.branch_2 = MixedLayerBranch("Branch_2", unit(c.b2a, 1, "Conv3d_0a_1x1"),
                                         unit(c.b2b, 3, branch_2_b_name(name)))
        self.branch_3 = MixedLayerBranch("Branch_3", None, unit(c.b3, 1, "Conv3d_0b_1x1"))

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
        check_logits_input(net.shape)
        net = _sonnet_avg_pool_logits(net)
        net = self.logits(net, is_training)
        net = tf.squeeze(net, [2, 3], name="SpatialSqueeze")
        return tf.reduce_mean(net, axis=1)


class _LoadPlan:
    """(variable, value) assignments from a TF1 checkpoint dict, checked before anything is assigned."""

    def __init__(self, variables: Mapping[str, np.ndarray], scope: str) -> None:
        self.variables = variables
        self.scope = scope
        self.steps: List[Tuple[Any, np.ndarray]] = []
        self.used: Set[str] = set()

    def take(self, name: str, var: Any, batch_norm: bool = False) -> np.ndarray:
        """Plan ``var`` = checkpoint variable ``<scope><name>`` (batch norms may be ``[1,1,1,1,C]``)."""
        full = self.scope + name
        if full not in self.variables:
            raise MissingVariableError(f"checkpoint has no variable {full!r}")
        value = np.asarray(self.variables[full])
        want = tuple(var.shape)
        channels = want[-1]
        if not (value.shape == want or (batch_norm and value.shape in ((channels,), (1, 1, 1, 1, channels)))):
            raise VariableShapeError(f"variable {full!r} has shape {list(value.shape)}, expected {list(want)}")
        self.used.add(full)
        self.steps.append((var, value.reshape(want)))
        return value.reshape(want)

    def add_unit(self, path: str, unit: "Unit3D") -> None:
        """Plan every variable of one Unit3D, the derived batch-norm state included."""
        self.take(f"{path}/conv_3d/w", unit.conv3d.w)
        if unit.conv3d.with_bias:
            self.take(f"{path}/conv_3d/b", unit.conv3d.b)
        bn = unit.batch_norm
        if not unit.use_batch_norm:
            for ema in (bn.moving_mean, bn.moving_variance):
                self.steps.append((ema._counter, np.array(0)))  # pylint: disable=protected-access
            return
        self.take(f"{path}/batch_norm/beta", bn.offset, True)
        self.steps.append((bn.scale, np.ones(bn.scale.shape)))
        for stat in ("moving_mean", "moving_variance"):
            ema = getattr(bn, stat)
            average = self.take(f"{path}/batch_norm/{stat}", ema.average, True)
            self.steps.append((ema._hidden, average))  # pylint: disable=protected-access
            self.steps.append((ema._counter, np.array(_EMA_COUNTER)))  # pylint: disable=protected-access

    def assign(self, module_variables: Sequence[Any]) -> None:
        """Assign the plan, after checking that it covers every module variable exactly once."""
        planned = [var.ref() for var, _ in self.steps]
        if len(planned) != len(set(planned)) or set(planned) != {v.ref() for v in module_variables}:
            raise RuntimeError("internal error: the load plan does not cover every module variable exactly once")
        for var, value in self.steps:
            var.assign(np.asarray(value, dtype=var.dtype.as_numpy_dtype))


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
        for name, (out, kernel, stride) in CONVS.items():
            setattr(self, name, Unit3D(out, kernel, stride, bn_eps=bn_eps, name=name))
        for name, channels in MIXED.items():
            setattr(self, name, MixedLayer(name, channels, bn_eps))
        self.Logits = Logits(num_classes, bn_eps, name="Logits")

    def __call__(self, inputs: tf.Tensor, is_training: bool = False,
                 final_endpoint: str = "Logits") -> Tuple[tf.Tensor, Dict[str, tf.Tensor]]:
        """Returns (output at ``final_endpoint``, {endpoint: tensor} up to it)."""
        check_endpoint(final_endpoint)
        net = inputs
        end_points: Dict[str, tf.Tensor] = {}
        for name in ENDPOINTS:
            if name in POOLS:
                net = _sonnet_max_pool(net, *POOLS[name])
            else:
                net = getattr(self, name)(net, is_training)
            end_points[name] = net
            if name == final_endpoint:
                break
        return net, end_points

    # -- variables --------------------------------------------------------

    def build(self, in_channels: int, dtype: Any = "float32") -> None:
        """Create all variables (Sonnet creates them on first call) cheaply."""
        build_dtype = tf_dtype(dtype)
        self(tf.zeros([1, 1, 1, 1, in_channels], build_dtype), final_endpoint="Mixed_5c")
        self.Logits.logits(tf.zeros([1, 1, 1, 1, 1024], build_dtype))

    @property
    def is_built(self) -> bool:
        return hasattr(self.Conv3d_1a_7x7.conv3d, "w")

    def tf1_units(self) -> List[Tuple[str, Unit3D]]:
        """(TF1 scope without the model prefix, unit) for every Unit3D."""
        units = [(n, getattr(self, n)) for n in CONVS]
        for mixed in MIXED:
            for index, branch in enumerate(getattr(self, mixed).branches()):
                for unit in branch.units():
                    units.append((f"{mixed}/Branch_{index}/{unit.tf1_name}", unit))
        units.append((LOGITS_CONV, self.Logits.logits))
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
        in_channels = in_channels_of(variables, scope)
        if not self.is_built:
            self.build(in_channels, "float32" if dtype is None else dtype)
        elif dtype is not None and self.Conv3d_1a_7x7.conv3d.w.dtype != tf_dtype(dtype):
            raise ValueError(f"module was built in {self.Conv3d_1a_7x7.conv3d.w.dtype.name}, not {dtype}")

        plan = _LoadPlan(variables, scope)
        for path, unit in self.tf1_units():
            plan.add_unit(path, unit)
        unused = [name for name in variables
                  if name not in plan.used
                  and not (name.endswith(SLOT_SUFFIX) and name[: -len(SLOT_SUFFIX)] in plan.used)
                  and not (scope_given and not name.startswith(scope))]
        if unused:
            raise UnexpectedVariableError(
                f"{len(unused)} checkpoint variable(s) are not part of I3D (scope {scope!r}): "
                f"{sorted(unused)[:5]}"
            )
        plan.assign(self.variables)

    @classmethod
    def from_tf1_variables(cls, variables: Mapping[str, np.ndarray], *, dtype: Any = "float32",
                           bn_eps: float = BN_EPS, scope: Optional[str] = None) -> "SonnetI3D":
        """A built and loaded module; ``num_classes`` from the Logits bias."""
        found = detect_scope(list(variables.keys()), scope)
        bias_name = f"{found}{LOGITS_CONV}/conv_3d/b"
        bias = variables.get(bias_name)
        if bias is None:
            raise MissingVariableError(f"checkpoint has no variable {bias_name!r}")
        module = cls(num_classes=int(np.shape(bias)[0]), bn_eps=bn_eps)
        module.build(in_channels_of(variables, found), dtype)
        module.load_tf1_variables(variables, scope=scope)
        return module




__all__ = ["Logits", "MixedLayer", "MixedLayerBranch", "SonnetI3D", "Unit3D", "snt"]
