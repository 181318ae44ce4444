"""A TF2 object-based I3D checkpoint's arrays -> DeepMind's TF1 names, strictly.

The names come from :func:`i3d_convert.names.tf2.tf2_name_table`; this module
applies that table to the arrays read by
:class:`~i3d_convert.io.checkpoint_reader.CheckpointReader` and checks the
values the table says to check (a batch-norm scale must be all ones). The
result feeds :func:`i3d_convert.conversion.tf_layout.tf_to_torch_arrays`,
which reads the channel and class counts and checks every shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Mapping, Optional

import numpy as np

from i3d_convert.errors import MappingError
from i3d_convert.names.tf1 import skip_reason
from i3d_convert.names.tf2 import SCALE, TENSOR, TF2_VALUE_SUFFIX, TRANSLATED_SCOPE, detect_root, tf2_name_table


@dataclass
class Tf2Translation:
    """TF1-named arrays for :func:`i3d_convert.conversion.tf_layout.tf_to_torch_arrays`, plus provenance."""

    arrays: Dict[str, np.ndarray]  # TF1 name (scope TRANSLATED_SCOPE) -> array
    root: str
    skipped: Dict[str, str] = field(default_factory=dict)  # TF2 name -> reason
    sources: Dict[str, str] = field(default_factory=dict)  # TF1 name -> TF2 name


def translate_tf2_arrays(arrays: Mapping[str, np.ndarray], *, path: Optional[str] = None) -> Tf2Translation:
    """Rename a TF2 object-based I3D checkpoint's arrays to DeepMind's TF1 names, strictly.

    Every name must be in :func:`~i3d_convert.names.tf2.tf2_name_table` (under
    the detected root) or match a :func:`~i3d_convert.names.tf1.skip_reason`
    rule; anything else is a :class:`MappingError` naming it. Arrays are not
    copied. The table's names do not depend on the channel or class count, so
    those and every shape are read and checked later, by the TF1 mapping.
    """
    names = sorted(arrays)
    root = detect_root(names, path)
    table = tf2_name_table()
    out: Dict[str, np.ndarray] = {}
    skipped: Dict[str, str] = {}
    sources: Dict[str, str] = {}
    for name in names:
        rule = None
        if name.startswith(root) and name.endswith(TF2_VALUE_SUFFIX):
            rule = table.get(name[len(root): -len(TF2_VALUE_SUFFIX)])
        if rule is None:
            reason = skip_reason(name)
            if reason is None:
                raise MappingError(f"unknown variable {name!r}: it has no place in the Sonnet 2 I3D", path)
            skipped[name] = reason
        elif rule.role == TENSOR:
            tf1 = TRANSLATED_SCOPE + rule.tf1_suffix
            out[tf1] = arrays[name]
            sources[tf1] = name
        elif rule.role == SCALE:
            value = np.asarray(arrays[name])
            if not np.all(value == 1):
                raise MappingError(
                    f"variable {name!r} is a batch-norm scale that is not all ones (min {value.min():g}, "
                    f"max {value.max():g}); DeepMind's I3D has no scale, so this is a different model", path)
            skipped[name] = rule.reason
        else:
            skipped[name] = rule.reason
    missing = [root + p + TF2_VALUE_SUFFIX for p, r in table.items()
               if r.role == TENSOR and TRANSLATED_SCOPE + r.tf1_suffix not in out]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise MappingError(f"missing variable {missing[0]!r}{more}", path)
    return Tf2Translation(out, root, skipped, sources)


__all__ = ["Tf2Translation", "translate_tf2_arrays"]
