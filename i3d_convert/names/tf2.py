"""TF2 object-based checkpoint names of the Sonnet 2 I3D port -> DeepMind's TF1 names.

The Sonnet 2 port proposed in kinetics-i3d pull request #127 (``tf_v2/``) saves
its model with ``tf.train.Checkpoint(model=...)``, so every variable is named
by its attribute path in the module tree plus ``/.ATTRIBUTES/VARIABLE_VALUE``::

    model/Conv3d_1a_7x7/conv3d/w                        Conv3d_1a_7x7/conv_3d/w
    model/Conv3d_1a_7x7/batch_norm/offset               Conv3d_1a_7x7/batch_norm/beta
    model/Conv3d_1a_7x7/batch_norm/moving_mean/average  Conv3d_1a_7x7/batch_norm/moving_mean
    model/Mixed_3b/branch_1/branch_b/conv3d/w           Mixed_3b/Branch_1/Conv3d_0b_3x3/conv_3d/w
    model/Mixed_4f/branch_3/branch_b/conv3d/w           Mixed_4f/Branch_3/Conv3d_0b_1x1/conv_3d/w
    model/Logits/logits/conv3d/{w,b}                    Logits/Conv3d_0c_1x1/conv_3d/{w,b}

(the root ``model/`` is whatever name the checkpoint's root object gave the
network; it is detected). Inside a mixed block, ``branch_<i>`` holds
``branch_a`` (the first conv) and ``branch_b`` (the second); Branch_0 has only
``branch_a``, Branch_3 only ``branch_b`` (its ``branch_a`` is the max pool,
which has no variables).

:func:`tf2_name_table` is the explicit table, one entry per TF2 variable name
(built from :mod:`i3d_convert.architecture`, never by string replacement on
the names); :func:`i3d_convert.conversion.tf2_layout.translate_tf2_arrays`
applies it strictly to the arrays. Variables that
carry no information for inference are skipped, each with its reason:

* ``moving_mean/_hidden``, ``moving_variance/_hidden`` and the ``_counter``
  steps of Sonnet 2's debiased moving averages: the debiased value the network
  uses at inference is ``average``;
* ``batch_norm/scale``: the port builds ``snt.BatchNorm(create_scale=False)``,
  which stores a constant scale of ones. A scale that is *not* all ones is an
  error (:class:`~i3d_convert.errors.MappingError`): DeepMind's network has no
  scale, so such a checkpoint is not this model and folding it silently would
  hide that;
* anything under the Logits unit's ``batch_norm``: that unit has no batch norm
  (``use_batch_norm=False``) but the port still creates the module, whose
  moving-average counters are saved;
* the object graph itself, ``save_counter`` and optimizer state (the
  :data:`i3d_convert.names.tf1.SKIP_PATTERNS` rules).

This module holds names only; no TensorFlow is needed anywhere on this path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

from i3d_convert import architecture as arch
from i3d_convert.errors import MappingError

#: Every variable of a TF2 object-based checkpoint ends with this.
TF2_VALUE_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
#: The stem kernel's module path below the root; used to find the root prefix.
_STEM_PATH = "Conv3d_1a_7x7/conv3d/w"
#: The TF1 scope the translated names get (DeepMind's unscoped, Kinetics-600 style).
TRANSLATED_SCOPE = ""

# Roles of a TF2 variable.
TENSOR = "tensor"  # renamed to a TF1 variable
SCALE = "scale"  # checked to be all ones, then skipped
SKIP = "skip"  # skipped with a reason

_REASON_EMA = "Sonnet 2 moving-average state (inference uses 'average')"
_REASON_LOGITS_BN = "batch norm module of the Logits unit, which applies none"
_REASON_SCALE = "batch-norm scale of ones (the port has create_scale=False)"

#: Sub-module paths inside one Sonnet 2 ``Unit3D`` -> TF1 names inside ``<unit>/``.
_UNIT_TENSORS: Tuple[Tuple[str, str], ...] = (
    ("conv3d/w", f"{arch.TF_CONV_SCOPE}/w"),
    ("conv3d/b", f"{arch.TF_CONV_SCOPE}/b"),
    ("batch_norm/offset", f"{arch.TF_BN_SCOPE}/beta"),
    ("batch_norm/moving_mean/average", f"{arch.TF_BN_SCOPE}/moving_mean"),
    ("batch_norm/moving_variance/average", f"{arch.TF_BN_SCOPE}/moving_variance"),
)
_UNIT_EMA_STATE: Tuple[str, ...] = (
    "batch_norm/moving_mean/_hidden",
    "batch_norm/moving_mean/_counter",
    "batch_norm/moving_variance/_hidden",
    "batch_norm/moving_variance/_counter",
)
#: Everything the Logits unit's unused batch norm module can hold.
_LOGITS_BN_STATE: Tuple[str, ...] = (
    "batch_norm/offset",
    "batch_norm/scale",
) + tuple(f"batch_norm/{stat}/{part}" for stat in ("moving_mean", "moving_variance")
          for part in ("average", "_hidden", "_counter"))


@dataclass(frozen=True)
class Tf2Rule:
    """What to do with one TF2 variable (name below the root, without the suffix)."""

    tf2_path: str
    role: str  # TENSOR, SCALE or SKIP
    tf1_suffix: Optional[str] = None  # for TENSOR: the TF1 name below the scope
    reason: Optional[str] = None  # for SCALE / SKIP


#: (DeepMind branch, conv name) -> the port's slot in ``MixedLayerBranch``.
_BRANCH_SLOTS: Dict[Tuple[str, str], str] = {
    ("Branch_0", "Conv3d_0a_1x1"): "branch_a",
    ("Branch_1", "Conv3d_0a_1x1"): "branch_a",
    ("Branch_1", "Conv3d_0b_3x3"): "branch_b",
    ("Branch_2", "Conv3d_0a_1x1"): "branch_a",
    ("Branch_2", "Conv3d_0b_3x3"): "branch_b",
    ("Branch_2", "Conv3d_0a_3x3"): "branch_b",  # Mixed_5b's name quirk
    ("Branch_3", "Conv3d_0b_1x1"): "branch_b",  # branch_a is the max pool
}


def _unit_module_path(unit: arch.ConvUnit) -> str:
    """DeepMind unit path -> the port's module path (``Mixed_3b/Branch_1/Conv3d_0b_3x3`` ->
    ``Mixed_3b/branch_1/branch_b``)."""
    if unit.path == f"{arch.LOGITS_NAME}/{arch.LOGITS_CONV_NAME}":
        return f"{arch.LOGITS_NAME}/logits"
    parts = unit.path.split("/")
    if len(parts) == 1:
        return unit.path
    block, branch, conv = parts
    return f"{block}/{branch.lower()}/{_BRANCH_SLOTS[(branch, conv)]}"


def tf2_name_table(in_channels: int = arch.RGB_CHANNELS,
                   num_classes: int = arch.NUM_CLASSES_400) -> Dict[str, Tf2Rule]:
    """``{TF2 path below the root (no .ATTRIBUTES suffix): Tf2Rule}`` for the whole network.

    523 entries: 9 for each of the 57 conv+BN units (conv ``w``, ``offset``, two
    ``average``s, ``scale``, four moving-average states), the logits ``w`` and
    ``b`` and the 8 possible variables of the Logits unit's unused batch norm.
    """
    table: Dict[str, Tf2Rule] = {}

    def add(rule: Tf2Rule) -> None:
        if rule.tf2_path in table:  # pragma: no cover - guards the table's construction
            raise AssertionError(f"duplicate TF2 path {rule.tf2_path!r}")
        table[rule.tf2_path] = rule

    for unit in arch.iter_conv_units(in_channels, num_classes):
        module = _unit_module_path(unit)
        for tf2_leaf, tf1_leaf in _UNIT_TENSORS:
            is_bias = tf2_leaf == "conv3d/b"
            is_bn = tf2_leaf.startswith("batch_norm/")
            if (is_bias and not unit.bias) or (is_bn and not unit.batch_norm):
                continue
            add(Tf2Rule(f"{module}/{tf2_leaf}", TENSOR, f"{unit.path}/{tf1_leaf}"))
        if unit.batch_norm:
            add(Tf2Rule(f"{module}/batch_norm/scale", SCALE, reason=_REASON_SCALE))
            for leaf in _UNIT_EMA_STATE:
                add(Tf2Rule(f"{module}/{leaf}", SKIP, reason=_REASON_EMA))
        else:
            for leaf in _LOGITS_BN_STATE:
                add(Tf2Rule(f"{module}/{leaf}", SKIP, reason=_REASON_LOGITS_BN))
    return table


def is_tf2_object_checkpoint(names: Sequence[str]) -> bool:
    """True when the names are those of a TF2 object-based checkpoint (``.../.ATTRIBUTES/VARIABLE_VALUE``)."""
    return any(name.endswith(TF2_VALUE_SUFFIX) for name in names)


def detect_root(names: Sequence[str], path: Optional[str] = None) -> str:
    """The prefix before ``Conv3d_1a_7x7/conv3d/w`` (``"model/"`` for the port's checkpoints)."""
    stem = _STEM_PATH + TF2_VALUE_SUFFIX
    roots = sorted({n[: -len(stem)] for n in names if n.endswith(stem)})
    roots = [r for r in roots if r == "" or r.endswith("/")]
    if len(roots) != 1:
        found = "none" if not roots else ", ".join(repr(r) for r in roots)
        raise MappingError(
            f"TF2 object-based checkpoint: expected exactly one '<root>{stem}' (the I3D stem), found {found}", path)
    return roots[0]


__all__ = ["SCALE", "SKIP", "TENSOR", "TF2_VALUE_SUFFIX", "TRANSLATED_SCOPE", "Tf2Rule", "detect_root",
           "is_tf2_object_checkpoint", "tf2_name_table"]
