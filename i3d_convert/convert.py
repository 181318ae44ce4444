"""tf-to-torch: checkpoint file -> arrays -> mapped state_dict -> .safetensors / .pt.

No TensorFlow is imported on this path.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Mapping, Optional

import numpy as np
import torch

from . import __version__
from . import architecture as arch
from .atomic import atomic_output, check_output_path
from .errors import I3DConvertError
from .layouts import LAYOUTS, to_layout
from .mapping import MappedCheckpoint, tf_to_torch_arrays
from .tensorbundle import CheckpointReader

FORMATS = ("safetensors", "pt")


@dataclass
class ConversionResult:
    """A converted checkpoint: the state_dict plus what was done to get it."""

    state_dict: "OrderedDict[str, torch.Tensor]"
    metadata: Dict[str, str]
    skipped: Dict[str, str] = field(default_factory=dict)  # TF name -> why it was not converted
    sources: Dict[str, str] = field(default_factory=dict)  # torch key -> TF name
    in_channels: int = arch.RGB_CHANNELS
    num_classes: int = arch.NUM_CLASSES_400
    scope: str = ""


def _sha256_of_files(paths) -> str:
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _to_tensor(array: np.ndarray) -> torch.Tensor:
    # One copy: from the (read-only, memory-mapped) checkpoint into a C-contiguous tensor.
    return torch.from_numpy(np.array(array, dtype=array.dtype, order="C", copy=True))


def convert_checkpoint(
    path: "str | os.PathLike[str]",
    *,
    layout: str = "native",
    verify_crc: bool = True,
    expected_in_channels: Optional[int] = None,
    expected_num_classes: Optional[int] = None,
) -> ConversionResult:
    """Read a DeepMind I3D TensorFlow checkpoint and return a PyTorch state_dict with provenance.

    ``path`` is a checkpoint prefix (``.../model.ckpt``), its ``.index`` file,
    a folder holding one checkpoint, or a TF V1 checkpoint file. Every tensor's
    crc32c is checked. ``layout`` is ``native`` (:class:`InceptionI3d` keys) or
    one of :data:`i3d_convert.layouts.LAYOUTS`.
    """
    with CheckpointReader(path, verify_crc=verify_crc) as reader:
        arrays = {name: reader.read(name) for name in reader.keys() if reader.entries[name].dtype.kind in "fiub"}
        skipped_non_numeric = {name: "not a numeric tensor" for name in reader.keys() if name not in arrays}
        mapped: MappedCheckpoint = tf_to_torch_arrays(
            arrays,
            path=str(reader.path),
            expected_in_channels=expected_in_channels,
            expected_num_classes=expected_num_classes,
        )
        state = OrderedDict((key, _to_tensor(mapped.arrays[key])) for key in sorted(mapped.arrays, key=_model_order()))
        data_files = reader.data_paths
        source = str(reader.path)
    metadata = {
        "format": "pt",
        "producer": f"i3d-convert {__version__}",
        "source_checkpoint": source,
        "source_sha256": _sha256_of_files(data_files),
        "num_classes": str(mapped.num_classes),
        "in_channels": str(mapped.in_channels),
        "bn_eps": repr(arch.BN_EPS),
        "layout": layout,
        "tf_scope": mapped.scope,
    }
    if layout != "native":
        state = to_layout(state, layout)
    return ConversionResult(
        state, metadata, {**skipped_non_numeric, **mapped.skipped}, mapped.sources,
        mapped.in_channels, mapped.num_classes, mapped.scope,
    )


def convert(path: "str | os.PathLike[str]", *, layout: str = "native") -> "OrderedDict[str, torch.Tensor]":
    """The converted state_dict of a TF checkpoint (see :func:`convert_checkpoint`)."""
    return convert_checkpoint(path, layout=layout).state_dict


def _model_order():
    from .mapping import mapping_table

    order = {rule.torch_key: i for i, rule in enumerate(mapping_table().values())}
    return lambda key: (order.get(key, len(order)), key)


def output_format(path: "str | os.PathLike[str]", fmt: Optional[str]) -> str:
    if fmt is None:
        suffix = Path(path).suffix.lower()
        fmt = {".safetensors": "safetensors", ".pt": "pt", ".pth": "pt", ".bin": "pt"}.get(suffix, "safetensors")
    if fmt not in FORMATS:
        raise I3DConvertError(f"unknown output format {fmt!r}; use one of {', '.join(FORMATS)}")
    return fmt


def save_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    path: "str | os.PathLike[str]",
    metadata: Optional[Mapping[str, str]] = None,
    *,
    fmt: Optional[str] = None,
    overwrite: bool = False,
) -> Path:
    """Write a state_dict atomically as ``.safetensors`` (metadata in the header) or ``.pt``.

    A ``.pt`` file holds the plain state_dict (``model.load_state_dict(torch.load(f,
    weights_only=True))`` works) with the metadata in its ``_metadata[""]["i3d_convert"]``.
    """
    fmt = output_format(path, fmt)
    meta = {k: str(v) for k, v in (metadata or {}).items()}
    meta["format"] = "pt"  # safetensors' own convention for torch tensors
    with atomic_output(path, overwrite) as tmp:
        if fmt == "safetensors":
            from safetensors.torch import save_file

            save_file({k: v.contiguous() for k, v in state_dict.items()}, str(tmp), metadata=meta)
        else:
            out = OrderedDict(state_dict)
            out._metadata = OrderedDict({"": {"i3d_convert": meta}})  # type: ignore[attr-defined]
            torch.save(out, tmp)
    return Path(path)


def convert_to_file(
    checkpoint: "str | os.PathLike[str]",
    output: "str | os.PathLike[str]",
    *,
    fmt: Optional[str] = None,
    layout: str = "native",
    overwrite: bool = False,
) -> ConversionResult:
    """Convert ``checkpoint`` and write it to ``output``; nothing is written on any error."""
    if layout not in ("native",) + tuple(LAYOUTS):
        raise I3DConvertError(f"unknown layout {layout!r}; use native or {', '.join(LAYOUTS)}")
    output_format(output, fmt)
    check_output_path(output, overwrite)
    result = convert_checkpoint(checkpoint, layout=layout)
    save_state_dict(result.state_dict, output, result.metadata, fmt=fmt, overwrite=overwrite)
    return result


def load_state_dict_file(path: "str | os.PathLike[str]") -> "OrderedDict[str, torch.Tensor]":
    """Read a ``.safetensors`` or ``.pt``/``.pth`` state_dict safely (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise I3DConvertError("file not found", path)
    with open(path, "rb") as f:
        head = f.read(8)
    try:
        if head[:2] == b"PK" or head[:1] == b"\x80":
            obj = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
                obj = obj["state_dict"]
            if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
                raise I3DConvertError("not a state_dict of tensors", path)
            return OrderedDict(obj)
        from safetensors.torch import load_file

        return OrderedDict(load_file(str(path)))
    except I3DConvertError:
        raise
    except Exception as exc:  # safetensors / pickle errors: report, never trust
        raise I3DConvertError(f"not a readable state_dict ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})", path) from None
