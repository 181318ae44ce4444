"""DeepMind's I3D written out as data, for the TensorFlow oracle; no TensorFlow here.

The network of ``InceptionI3d`` in DeepMind's ``kinetics-i3d/i3d.py`` (TF1,
Sonnet 1), endpoint by endpoint, written from that file and not from this
package's PyTorch model or its layer table (:mod:`i3d_convert.architecture`):
:data:`CONVS`, :data:`POOLS`, :data:`MIXED` and :func:`inception_i3d`, which
runs it on any backend ``ops`` with ``unit`` (Unit3D: conv -> BN -> ReLU),
``max_pool``, ``concat`` and ``logits``. Also what both TensorFlow
implementations (:mod:`i3d_convert.reference.tf_forward`,
:mod:`i3d_convert.reference.sonnet`) need to check a TF1 checkpoint dict:
the expected variable names and shapes, scope detection, the errors.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from i3d_convert.errors import MappingError

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
SLOT_SUFFIX = "/Momentum"
#: A variable every I3D checkpoint has; used to find the scope prefix.
_ANCHOR = "Conv3d_1a_7x7/conv_3d/w"


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
# The network, as in DeepMind's i3d.py. Paths are TF1 variable scopes without
# the model prefix.


class MixedChannels(NamedTuple):
    """Output channels of an Inception block's convs: Branch_0, Branch_1 (1x1, 3x3), Branch_2 (1x1, 3x3), Branch_3."""

    b0: int
    b1a: int
    b1b: int
    b2a: int
    b2b: int
    b3: int


#: Stand-alone Unit3D endpoints: (output channels, kernel, stride).
CONVS: Dict[str, Tuple[int, Tuple[int, int, int], Tuple[int, int, int]]] = {
    "Conv3d_1a_7x7": (64, (7, 7, 7), (2, 2, 2)),
    "Conv3d_2b_1x1": (64, (1, 1, 1), (1, 1, 1)),
    "Conv3d_2c_3x3": (192, (3, 3, 3), (1, 1, 1)),
}
#: Max-pool endpoints ('SAME'): (kernel, stride).
POOLS: Dict[str, Tuple[Tuple[int, int, int], Tuple[int, int, int]]] = {
    "MaxPool3d_2a_3x3": ((1, 3, 3), (1, 2, 2)),
    "MaxPool3d_3a_3x3": ((1, 3, 3), (1, 2, 2)),
    "MaxPool3d_4a_3x3": ((3, 3, 3), (2, 2, 2)),
    "MaxPool3d_5a_2x2": ((2, 2, 2), (2, 2, 2)),
}
#: Inception-block endpoints.
MIXED: Dict[str, MixedChannels] = {
    "Mixed_3b": MixedChannels(64, 96, 128, 16, 32, 32),
    "Mixed_3c": MixedChannels(128, 128, 192, 32, 96, 64),
    "Mixed_4b": MixedChannels(192, 96, 208, 16, 48, 64),
    "Mixed_4c": MixedChannels(160, 112, 224, 24, 64, 64),
    "Mixed_4d": MixedChannels(128, 128, 256, 24, 64, 64),
    "Mixed_4e": MixedChannels(112, 144, 288, 32, 64, 64),
    "Mixed_4f": MixedChannels(256, 160, 320, 32, 128, 128),
    "Mixed_5b": MixedChannels(256, 160, 320, 32, 128, 128),
    "Mixed_5c": MixedChannels(384, 192, 384, 48, 128, 128),
}
#: The Logits conv's scope.
LOGITS_CONV = "Logits/Conv3d_0c_1x1"


def branch_2_b_name(block: str) -> str:
    """Branch_2's 3x3 conv: ``Conv3d_0b_3x3``, except in Mixed_5b (``Conv3d_0a_3x3``, as in TF-slim)."""
    return "Conv3d_0a_3x3" if block == "Mixed_5b" else "Conv3d_0b_3x3"


def _mixed(ops: Any, net: Any, scope: str, c: MixedChannels) -> Any:
    branch_0 = ops.unit(net, f"{scope}/Branch_0/Conv3d_0a_1x1", c.b0, (1, 1, 1))
    branch_1 = ops.unit(net, f"{scope}/Branch_1/Conv3d_0a_1x1", c.b1a, (1, 1, 1))
    branch_1 = ops.unit(branch_1, f"{scope}/Branch_1/Conv3d_0b_3x3", c.b1b, (3, 3, 3))
    branch_2 = ops.unit(net, f"{scope}/Branch_2/Conv3d_0a_1x1", c.b2a, (1, 1, 1))
    branch_2 = ops.unit(branch_2, f"{scope}/Branch_2/{branch_2_b_name(scope)}", c.b2b, (3, 3, 3))
    branch_3 = ops.max_pool(net, (3, 3, 3), (1, 1, 1))  # Branch_3/MaxPool3d_0a_3x3
    branch_3 = ops.unit(branch_3, f"{scope}/Branch_3/Conv3d_0b_1x1", c.b3, (1, 1, 1))
    return ops.concat([branch_0, branch_1, branch_2, branch_3])


def check_endpoint(final_endpoint: str) -> None:
    """``ValueError`` unless ``final_endpoint`` is one of :data:`ENDPOINTS`."""
    if final_endpoint not in ENDPOINTS:
        raise ValueError(f"unknown final_endpoint {final_endpoint!r}; expected one of {ENDPOINTS}")


def inception_i3d(ops: Any, net: Any, final_endpoint: str) -> Dict[str, Any]:
    """Endpoints up to and including ``final_endpoint``, in order."""
    check_endpoint(final_endpoint)
    end_points: Dict[str, Any] = {}
    for name in ENDPOINTS:
        if name in CONVS:
            net = ops.unit(net, name, *CONVS[name])
        elif name in POOLS:
            net = ops.max_pool(net, *POOLS[name])
        elif name in MIXED:
            net = _mixed(ops, net, name, MIXED[name])
        else:
            net = ops.logits(net, LOGITS_CONV)
        end_points[name] = net
        if name == final_endpoint:
            break
    return end_points


class _ShapeOps:
    """Runs :func:`inception_i3d` on channel counts, recording variable shapes."""

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
    shapes = needed_variables(in_channels, num_classes, "Logits", bn_shape)
    return {scope + name: shape for name, shape in shapes.items()}


def needed_variables(in_channels: int, num_classes: int, final_endpoint: str,
                     bn_shape: str = "vector") -> Dict[str, Tuple[int, ...]]:
    """Name (without scope) -> shape of the variables the network uses up to ``final_endpoint``."""
    ops = _ShapeOps(num_classes, bn_shape)
    inception_i3d(ops, in_channels, final_endpoint)
    return ops.shapes


# --------------------------------------------------------------------------
# Checkpoint-dict handling


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


def check_variables(
    variables: Mapping[str, Any], scope: str, scope_given: bool, in_channels: int,
) -> Tuple[Dict[str, np.ndarray], int]:
    """Validate a checkpoint dict; return {path-without-scope: array} and num_classes.

    Every variable under ``scope`` must be a known I3D variable (or its
    ``/Momentum`` slot) with the right shape; with a detected scope, variables
    outside it are errors too. Batch-norm tensors may be ``[C]`` or
    ``[1, 1, 1, 1, C]``. Missing variables are reported when they are needed.
    """
    logits_b = variables.get(f"{scope}{LOGITS_CONV}/conv_3d/b")
    logits_w = variables.get(f"{scope}{LOGITS_CONV}/conv_3d/w")
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
        if path.endswith(SLOT_SUFFIX) and path[: -len(SLOT_SUFFIX)] in expected:
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


def in_channels_of(variables: Mapping[str, Any], scope: str) -> int:
    """Input channels of the checkpoint's first conv (3 RGB, 2 Flow)."""
    w = variables[scope + _ANCHOR]
    if np.ndim(w) != 5:
        raise VariableShapeError(
            f"variable {scope + _ANCHOR!r} has shape {list(np.shape(w))}, expected [7, 7, 7, in, 64]"
        )
    return int(np.shape(w)[3])



def same_pads(size: int, k: int, s: int) -> Tuple[int, int, int]:
    """TF 'SAME': (output size, pad before, pad after); the extra pad goes after."""
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return out, total // 2, total - total // 2


def check_logits_input(shape: Sequence[int]) -> None:
    """``ValueError`` unless a ``[B, T, H, W, C]`` Mixed_5c map fits the Logits pool (T >= 2, H = W = 7)."""
    if shape[1] < 2 or shape[2] != 7 or shape[3] != 7:
        raise ValueError(
            "the Logits average pool ([2, 7, 7], 'VALID', then a spatial squeeze) needs a "
            f"Mixed_5c map of at least 2x7x7 with exactly 7x7 space, got {list(shape[1:4])} "
            "(DeepMind's inputs are 224x224 with >= 9 frames); use final_endpoint='Mixed_5c' "
            "for other sizes"
        )


__all__ = [
    "CONVS", "ENDPOINTS", "LOGITS_CONV", "MIXED", "POOLS", "SLOT_SUFFIX", "MissingVariableError",
    "MixedChannels", "UnexpectedVariableError", "VariableShapeError", "branch_2_b_name", "check_endpoint",
    "check_logits_input", "check_variables", "detect_scope", "expected_tf1_variables", "in_channels_of",
    "inception_i3d", "needed_variables", "same_pads",
]
