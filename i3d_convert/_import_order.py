"""Keep TensorFlow from crashing PyTorch's native libraries.

Measured with torch 2.14.1, torchvision 0.29.1 (Triton bundled with torch) and
TensorFlow 2.21 in one process: ``import tensorflow`` followed by ``import
torchvision``, ``import timm``, ``import triton`` or ``import torch._dynamo``
dies with SIGSEGV inside ``triton/_C/libtriton.so``; loaded the other way round,
everything works. The one module that imports TensorFlow
(:mod:`i3d_convert.reference.tf_runtime`) therefore loads torchvision / Triton first, and the
modules that import torchvision check the order, so that the crash becomes a clear error;
``import i3d_convert`` itself imports neither Triton nor TensorFlow.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import warnings


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def preload_native_libraries(names=("triton",)) -> None:
    """Import ``names`` now if TensorFlow is not loaded yet (a no-op otherwise)."""
    if "tensorflow" in sys.modules:
        return
    for name in names:
        if name in sys.modules or not _installed(name):
            continue
        try:
            importlib.import_module(name)
        except ImportError:
            pass
        except Exception as exc:  # noqa: BLE001 - a preload must never break the import
            warnings.warn(f"could not preload {name}: {exc!r}", RuntimeWarning, stacklevel=2)


def tensorflow_loaded_too_early() -> bool:
    """True when importing Triton-backed modules (torchvision, timm) now would crash."""
    return "tensorflow" in sys.modules and "triton" not in sys.modules and _installed("triton")


def require_safe_torchvision_import(what: str) -> None:
    """Raise ImportError instead of letting ``what`` crash the process (see the module doc)."""
    if "torchvision" in sys.modules:
        return
    if tensorflow_loaded_too_early():
        raise ImportError(
            f"{what} needs torchvision, which crashes (SIGSEGV) when imported after tensorflow in this "
            "environment; import i3d_convert (or torchvision) before tensorflow"
        )
