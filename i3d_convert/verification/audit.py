"""The cause search of a failing :func:`~i3d_convert.verification.verify.verify`: which PyTorch-side setting drifts.

When the PyTorch side runs with a port's own batch-norm eps or padding and
diverges, it is re-run with each subset of those settings reset to DeepMind's
(eps ``bn_eps``, TensorFlow 'SAME' padding); the smallest reset that passes
names the cause.
"""

from __future__ import annotations

from itertools import combinations
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from i3d_convert import architecture as arch
from i3d_convert.verification.compare import compare_endpoints, first_failure
from i3d_convert.verification.options import VerifyOptions
from i3d_convert.verification.report import AuditVariant
from i3d_convert.verification.sides import TorchSide


def _variant(side: TorchSide, reference: Mapping[str, np.ndarray], floors: Optional[Mapping[str, float]],
             options: VerifyOptions, reset: Sequence[str]) -> AuditVariant:
    """The PyTorch side re-run with the settings in ``reset`` set to the reference's, compared to ``reference``."""
    eps = options.bn_eps if "bn_eps" in reset else options.torch_eps
    padding = "tf_same" if "pad" in reset else options.pad
    rows = compare_endpoints(side.run(eps, padding), reference, options.dtype, floors=floors,
                             atol=options.atol, rtol=options.rtol)
    logits = next(r for r in rows if r.name == arch.LOGITS_NAME)
    ratio = max((r.rel_l2 / r.allowed_rel_l2 if r.problem is None else float("inf")) for r in rows)
    first = first_failure(rows)
    return AuditVariant({"bn_eps": eps, "pad": padding}, list(reset), logits.rel_l2, ratio, first, first is None)


def audit_settings(side: TorchSide, reference: Mapping[str, np.ndarray], floors: Optional[Mapping[str, float]],
                   options: VerifyOptions) -> Tuple[List[AuditVariant], str]:
    """Re-run ``side`` with each subset of ``options.changed_settings()`` reset; the runs and a one-line cause."""
    changed = options.changed_settings()
    if not changed:
        return [], ("the PyTorch side already uses DeepMind's settings (eps {:g}, TF 'SAME' padding): the drift "
                    "comes from the weights or the model code, not from a setting".format(options.bn_eps))
    variants = [_variant(side, reference, floors, options, reset)
                for size in range(1, len(changed) + 1) for reset in combinations(changed, size)]
    return variants, _cause(variants, changed, options)


def _cause(variants: Sequence[AuditVariant], changed: Sequence[str], options: VerifyOptions) -> str:
    describe: Dict[str, str] = {"bn_eps": f"batch-norm eps {options.torch_eps:g} (DeepMind: {options.bn_eps:g})",
                                "pad": f"{options.pad} padding (DeepMind: TF 'SAME', extra pixel after)"}
    fixes = [v for v in variants if v.passed]
    if not fixes:
        return ("even with " + " and ".join(describe[s].split(" (")[0] for s in changed) +
                " reset to DeepMind's values the PyTorch side drifts: the weights or the model code differ too")
    smallest = min(fixes, key=lambda v: len(v.reset))
    singles = {v.reset[0]: v for v in variants if len(v.reset) == 1}
    parts = [f"resetting {describe[name]} alone gives logits rel L2 {singles[name].logits_rel_l2:.3g}"
             f" ({'passes' if singles[name].passed else 'still fails'})" for name in changed if name in singles]
    culprits = " and ".join(describe[s] for s in smallest.reset)
    return f"caused by {culprits}; " + "; ".join(parts)


__all__ = ["audit_settings"]
