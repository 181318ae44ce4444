"""i3d-inflate's Python API: a 2D ImageNet checkpoint file -> 3D video-network weights with provenance.

Pipeline, one pure function per step::

    source file --read_slim / read_torchvision--> {source tensor name: array}      (sources.py)
        --slim_to_2d / torchvision_to_2d--> Weights2D   (I3D's names, 2D kernels, gamma folded)
        --inflate_weights--> {I3D TF name: 5-D array}   (recipe.py; temporal kernels from architecture.py)
        --conversion.tf_layout.tf_to_torch_arrays--> InceptionI3d state_dict (strict, 230 tensors)

``timm:NAME`` sources: any 2D CNN built from plain conv/bn/pool layers, inflated
module by module with :func:`i3d_convert.inflation.modules.inflate_module`.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np
import torch

from i3d_convert._version import __version__
from i3d_convert import architecture as arch
from i3d_convert.conversion.sources import load_state_dict_file
from i3d_convert.conversion.tf_to_torch import sha256_of_files
from i3d_convert.errors import I3DConvertError, MappingError
from i3d_convert.inflation.modules import TimeKernels, inflate_module, temporal_plan
from i3d_convert.inflation.recipe import InflationOptions, check_mode, inflate_weights, time_kernels
from i3d_convert.inflation.sources import (
    SOURCE_FORMATS, TIMM_PREFIX, Weights2D, detect_source_format, read_slim, read_torchvision, slim_to_2d,
    torchvision_to_2d,
)
from i3d_convert.conversion.tf_layout import tf_to_torch_arrays
from i3d_convert.names.tf1 import mapping_table

# --------------------------------------------------------------------------- public API


@dataclass
class InflationResult:
    """An inflated state_dict with its provenance."""

    state_dict: "OrderedDict[str, torch.Tensor]"
    metadata: Dict[str, str]
    sources: Dict[str, Tuple[str, ...]]  # state_dict key -> source tensors it was made from
    dropped: Dict[str, str]  # source tensor -> why it is not in the output
    in_channels: int
    num_classes: int
    source_format: str


def _torch_state(arrays: Mapping[str, np.ndarray], in_channels: int, num_classes: int, path: Optional[str]):
    mapped = tf_to_torch_arrays(arrays, path=path, expected_in_channels=in_channels, expected_num_classes=num_classes)
    order = {rule.torch_key: i for i, rule in enumerate(mapping_table(in_channels, num_classes).values())}
    state = OrderedDict(
        (key, torch.from_numpy(np.array(mapped.arrays[key], order="C", copy=True)))
        for key in sorted(mapped.arrays, key=lambda k: order[k])
    )
    return state, mapped.sources


def inflate_source(weights: Weights2D, options: Optional[InflationOptions] = None, **settings: Any) -> InflationResult:
    """:class:`Weights2D` -> an :class:`~i3d_convert.models.i3d.InceptionI3d` state_dict (strict) with provenance.

    ``options``/``settings``: :class:`~i3d_convert.inflation.recipe.InflationOptions`, as :func:`inflate_weights`.
    """
    opts = InflationOptions.of(options, settings)
    inflated = inflate_weights(weights, opts)
    state, tf_names = _torch_state(inflated.arrays, inflated.in_channels, inflated.num_classes, weights.path)
    sources = {key: inflated.sources.get(tf_name, ()) for key, tf_name in tf_names.items()}
    metadata = {
        "producer": f"i3d-inflate (i3d-convert {__version__})",
        "architecture": "InceptionI3d",
        "source_format": weights.source_format,
        "source_checkpoint": weights.path or "",
        "mode": opts.mode,
        "in_channels": str(inflated.in_channels),
        "num_classes": str(inflated.num_classes),
        "bn_eps": repr(arch.BN_EPS),
        "time_kernels": json.dumps(time_kernels(inflated.in_channels, inflated.num_classes)),
        "stem": inflated.stem,
        "logits": inflated.logits,
        "dropped": json.dumps(inflated.dropped),
        "layout": "native",
    }
    if weights.source_format == "torchvision":
        metadata["bn_scale"] = "folded into conv kernels and moving means (gamma*w, gamma*m)"
    return InflationResult(state, metadata, sources, inflated.dropped, inflated.in_channels,
                           inflated.num_classes, weights.source_format)


def inflate(
    source: "str | os.PathLike[str]",
    *,
    source_format: Optional[str] = None,
    mode: str = "mean",
    in_channels: int = arch.RGB_CHANNELS,
    num_classes: Optional[int] = None,
    reinit_logits: bool = False,
    seed: int = 0,
    time_kernel: Optional[int] = None,
) -> InflationResult:
    """Inflate a 2D ImageNet checkpoint file into 3D weights.

    ``source_format``: ``slim``, ``torchvision``, ``timm:NAME`` or ``None``
    (a PyTorch/safetensors file is torchvision, anything else slim). For slim and
    torchvision the result is an :class:`~i3d_convert.models.i3d.InceptionI3d`
    state_dict (``InceptionI3d(result.num_classes, result.in_channels)`` loads it
    with ``strict=True``). For ``timm:NAME`` the file holds the timm model's 2D
    state_dict and the result is the state_dict of
    ``inflate_module(timm.create_model(NAME, pretrained=False, num_classes=...), time_kernels=time_kernel)``
    (``time_kernel`` defaults to 3; Inception-v1's temporal kernels come from the
    architecture table, so it is refused for the other sources).
    All user errors raise :class:`I3DConvertError` naming the file.
    """
    check_mode(mode)
    fmt = detect_source_format(source) if source_format is None else source_format
    if fmt.startswith(TIMM_PREFIX):
        return inflate_timm(fmt[len(TIMM_PREFIX):], source, mode=mode, in_channels=in_channels,
                            num_classes=num_classes, reinit_logits=reinit_logits, seed=seed,
                            time_kernel=3 if time_kernel is None else time_kernel)
    if time_kernel is not None:
        raise I3DConvertError("time_kernel is for timm sources; Inception-v1's temporal kernels come from "
                              "the architecture table (stem 7, 3x3 convs 3, 1x1 convs 1)")
    if fmt == "slim":
        arrays, resolved, data_files = read_slim(source)
        weights = slim_to_2d(arrays, resolved)
    elif fmt == "torchvision":
        if not Path(source).is_file():
            raise I3DConvertError("file not found" if not Path(source).exists() else "not a file", source)
        weights = torchvision_to_2d(read_torchvision(source), str(source))
        data_files = [Path(source)]
    else:
        raise I3DConvertError(f"unknown source format {fmt!r}; use one of {', '.join(SOURCE_FORMATS)}")
    result = inflate_source(weights, InflationOptions(mode=mode, in_channels=in_channels, num_classes=num_classes,
                                                      reinit_logits=reinit_logits, seed=seed))
    result.metadata["source_sha256"] = sha256_of_files(data_files)
    return result


def inflate_to_file(
    source: "str | os.PathLike[str]",
    output: "str | os.PathLike[str]",
    *,
    fmt: Optional[str] = None,
    overwrite: bool = False,
    **options,
) -> InflationResult:
    """:func:`inflate` and write the state_dict atomically (``.safetensors`` or ``.pt``); nothing is written on any error."""
    from i3d_convert.io.atomic import check_output_path
    from i3d_convert.conversion.tf_to_torch import output_format, save_state_dict

    output_format(output, fmt)
    check_output_path(output, overwrite)
    result = inflate(source, **options)
    save_state_dict(result.state_dict, output, result.metadata, fmt=fmt, overwrite=overwrite)
    return result


def inflate_timm(
    name: str,
    weights: "str | os.PathLike[str] | None" = None,
    *,
    mode: str = "mean",
    in_channels: int = arch.RGB_CHANNELS,
    num_classes: Optional[int] = None,
    reinit_logits: bool = False,
    seed: int = 0,
    time_kernel: TimeKernels = 3,
) -> InflationResult:
    """``timm.create_model(name, pretrained=False)`` (no network), load ``weights`` strictly, inflate with :func:`inflate_module`.

    ``weights`` is the model's 2D state_dict file (``.pth`` with
    ``weights_only=True``, or ``.safetensors``); ``None`` inflates timm's own
    random initialisation. ``num_classes`` different from the file's (or
    ``reinit_logits``) resets the classifier with timm's ``reset_classifier``
    under ``torch.manual_seed(seed)``.
    """
    try:
        import timm
    except ImportError:
        raise I3DConvertError("timm sources need timm: pip install 'i3d-convert[timm]'") from None
    if in_channels != arch.RGB_CHANNELS:
        raise I3DConvertError("in_channels other than 3 is supported for the Inception-v1 sources only")
    if not name or not timm.is_model(name):
        raise I3DConvertError(f"unknown timm model {name!r}")
    path = None if weights is None else str(weights)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = timm.create_model(name, pretrained=False)
        if weights is not None:
            state = dict(load_state_dict_file(weights))
            try:
                result = model.load_state_dict(state, strict=False)
            except RuntimeError as exc:  # shape mismatches
                detail = " ".join(str(exc).split("\n")[1:2]).strip() or str(exc).splitlines()[0]
                raise MappingError(f"not a state_dict of timm model {name!r}: {detail}", path) from None
            if result.missing_keys or result.unexpected_keys:
                problem = (f"missing key {result.missing_keys[0]!r}" if result.missing_keys
                           else f"unexpected key {result.unexpected_keys[0]!r}")
                raise MappingError(f"not a state_dict of timm model {name!r}: {problem}", path)
        head_classes = getattr(model, "num_classes", None)
        logits = "carried over from the source"
        if reinit_logits or (num_classes is not None and num_classes != head_classes):
            target = head_classes if num_classes is None else num_classes
            model.reset_classifier(target)
            logits = f"re-initialised for {target} classes by timm reset_classifier under torch.manual_seed({seed})"
    model.eval()
    plan = temporal_plan(model, time_kernel)
    model_3d = inflate_module(model, time_kernel, mode=mode)
    state = OrderedDict((k, v.detach()) for k, v in model_3d.state_dict().items())
    metadata = {
        "producer": f"i3d-inflate (i3d-convert {__version__})",
        "architecture": f"timm:{name} (timm {timm.__version__}) inflated by i3d_convert.inflation.modules.inflate_module",
        "rebuild": f"inflate_module(timm.create_model({name!r}, pretrained=False, num_classes={getattr(model, 'num_classes', '?')}), "
                   f"time_kernels={time_kernel!r}, mode={mode!r})",
        "source_format": f"timm:{name}",
        "source_checkpoint": path or "",
        "source_sha256": sha256_of_files([Path(weights)]) if weights is not None else "",
        "mode": mode,
        "time_kernels": json.dumps({n: k for n, (k, _) in plan.items()}),
        "logits": logits,
        "layout": "timm",
    }
    return InflationResult(state, metadata, {k: (k,) for k in state}, {}, arch.RGB_CHANNELS,
                           int(getattr(model, "num_classes", 0) or 0), f"timm:{name}")

