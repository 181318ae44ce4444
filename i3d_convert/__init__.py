"""i3d-convert: DeepMind's I3D video models in PyTorch, exactly.

Public API::

    InceptionI3d                 the model (NCTHW input in [-1, 1])
    load_tf_checkpoint(path)     TensorFlow checkpoint -> {name: numpy array}, no TensorFlow needed
    convert(path)                TensorFlow checkpoint -> PyTorch state_dict
    convert_to_file(path, out)   ... written atomically as .safetensors or .pt

TensorFlow is never imported by this package except by ``i3d_convert.tf_reference``
(the ``[tf]`` extra), which is loaded only for parity checks.
"""

__version__ = "0.1.0"

from importlib import import_module as _import_module
from typing import Any as _Any

#: public name -> defining module; imported on first use so that ``import i3d_convert`` stays light.
_EXPORTS = {
    "I3DConvertError": "errors",
    "InceptionI3d": "model",
    "load_tf_checkpoint": "tensorbundle",
}

# The function ``convert`` shares its name with its module; importing it here, once,
# makes ``i3d_convert.convert`` the function (importing the submodule later does not rebind it).
from .convert import convert, convert_checkpoint, convert_to_file, load_state_dict_file, save_state_dict  # noqa: E402

__all__ = ["__version__", *_EXPORTS, "convert", "convert_checkpoint", "convert_to_file",
           "load_state_dict_file", "save_state_dict"]


def __getattr__(name: str) -> _Any:
    if name in _EXPORTS:
        return getattr(_import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'i3d_convert' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
