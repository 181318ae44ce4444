"""The settings of one :func:`~i3d_convert.verification.verify.verify` run, grouped and checked in one place."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Mapping, MutableMapping, Optional

import numpy as np

from i3d_convert import architecture as arch
from i3d_convert.errors import I3DConvertError, PathLike

#: Layouts a ``torch_weights`` state_dict can be in.
VERIFY_LAYOUTS = ("native", "piergiaj")
#: Padding modes of the PyTorch side (``symmetric`` exists only for the piergiaj port).
PAD_MODES = ("tf_same", "symmetric")
DTYPES = ("float32", "float64")
#: Default frames of the seeded random clip (224x224, like DeepMind's sample).
DEFAULT_FRAMES = 16
#: Seed of the default random clip and of the built-in synthetic checkpoint.
DEFAULT_SEED = 0


@dataclass
class VerifyOptions:
    """Everything :func:`~i3d_convert.verification.verify.verify` takes besides the checkpoint.

    torch_weights: a ``.safetensors``/``.pt`` state_dict run on the PyTorch side
      instead of the converted checkpoint.
    layout: ``native`` (InceptionI3d) or ``piergiaj`` (PiergiajI3D, run with
      ``torch_bn_eps`` and ``pad``).
    clip: None (seeded random clip), a ``.npy`` NTHWC clip in [-1, 1] or a video/GIF.
    frames: frames of the random clip (default 16) or the first frames of a file.
    device: PyTorch's device (``cpu``, ``cuda``, ...); dtype: ``float32`` or ``float64``, both sides.
    atol, rtol: override the logits max-|diff| and per-endpoint relative-L2 allowances.
    bn_eps: the reference's batch-norm eps (DeepMind's 1e-3); torch_bn_eps: the
      PyTorch side's (default ``bn_eps``); pad: the PyTorch side's padding.
    allow_tf32: TF32 on both sides (GPU only; off by default for parity).
    tf_device: ``cpu``/``gpu`` or None (``gpu`` when PyTorch runs on CUDA and TensorFlow sees a GPU).
    seed: seed of the random clip and of the built-in synthetic checkpoint.
    audit: on failure with a non-default ``torch_bn_eps``/``pad``, re-run the
      PyTorch side with those reset to name the setting that causes the drift.
    allow_non_finite: compare NaN/inf weights (with a warning) instead of refusing them.
    cache: a dict reused across calls to skip repeated TensorFlow runs on the
      same weights, clip and settings.
    """

    torch_weights: Optional[PathLike] = None
    layout: str = "native"
    clip: Optional[PathLike] = None
    frames: Optional[int] = None
    device: str = "cpu"
    dtype: str = "float32"
    atol: Optional[float] = None
    rtol: Optional[float] = None
    bn_eps: float = arch.BN_EPS
    torch_bn_eps: Optional[float] = None
    pad: str = "tf_same"
    allow_tf32: bool = False
    tf_device: Optional[str] = None
    seed: int = DEFAULT_SEED
    audit: bool = True
    allow_non_finite: bool = False
    cache: Optional[MutableMapping] = None

    @classmethod
    def from_keywords(cls, options: Optional["VerifyOptions"], keywords: Mapping[str, Any]) -> "VerifyOptions":
        """``options`` (or the defaults) with ``keywords`` replacing fields; an unknown keyword is a TypeError."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(keywords) - names)
        if unknown:
            raise TypeError(f"verify() got an unexpected keyword argument {unknown[0]!r}")
        base = {f.name: getattr(options, f.name) for f in fields(cls)} if options is not None else {}
        return cls(**{**base, **keywords})

    @property
    def torch_eps(self) -> float:
        """The PyTorch side's batch-norm eps."""
        return self.bn_eps if self.torch_bn_eps is None else self.torch_bn_eps

    def changed_settings(self) -> list:
        """The PyTorch-side settings that differ from the reference's (``bn_eps``, ``pad``), in that order."""
        return [name for name, differs in (("bn_eps", self.torch_eps != self.bn_eps), ("pad", self.pad != "tf_same"))
                if differs]

    def check(self) -> None:
        """Raise :class:`I3DConvertError` naming the first bad argument."""
        if self.layout not in VERIFY_LAYOUTS:
            raise I3DConvertError(f"unknown layout {self.layout!r}; use one of {', '.join(VERIFY_LAYOUTS)}")
        if self.dtype not in DTYPES:
            raise I3DConvertError(f"unknown dtype {self.dtype!r}; use float32 or float64")
        if self.pad not in PAD_MODES:
            raise I3DConvertError(f"unknown padding {self.pad!r}; use tf_same or symmetric")
        for label in ("bn_eps", "torch_bn_eps", "atol", "rtol"):
            value = getattr(self, label)
            if value is not None and not (np.isfinite(value) and value > 0):
                raise I3DConvertError(f"{label} must be a positive number, got {value}")
        if self.frames is not None and self.frames < 1:
            raise I3DConvertError(f"{{arg}} must be at least 1, got {self.frames}", argument="frames")


__all__ = ["DEFAULT_FRAMES", "DEFAULT_SEED", "DTYPES", "PAD_MODES", "VERIFY_LAYOUTS", "VerifyOptions"]
