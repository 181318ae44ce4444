"""Seeded synthetic I3D checkpoints with the exact names and shapes of DeepMind's releases.

Random weights alone make a deep network's activations collapse or explode, so
batch-norm statistics are *calibrated*: one forward pass over a seeded clip sets
every layer's ``moving_mean``/``moving_variance`` from the activations that
actually reach it (perturbed a little), so each layer's output is O(1) and the
logits are O(1-10) -- a test bench as demanding as real weights, and available
offline.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Tuple

import numpy as np
import torch

from i3d_convert import architecture as arch
from i3d_convert.conversion.tf_layout import torch_to_tf_arrays
from i3d_convert.models.i3d import BatchNormNoScale, InceptionI3d
from i3d_convert.weights.releases import RELEASES, release_index_path
from i3d_convert.io.checkpoint_reader import list_variables
from i3d_convert.io.bundle_writer import write_checkpoint

#: Standard deviation the calibrated logits are scaled to.
LOGIT_STD = 3.0
#: Clip used for calibration: frames x height x width.
CALIBRATION_SHAPE = (16, 224, 224)


def random_clip(shape: Tuple[int, ...], seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A seeded clip in [-1, 1] with some spatial and temporal smoothness, layout as given (NCTHW)."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1
    # Smooth a little so that pooling and strided layers see image-like structure.
    smooth = torch.nn.functional.avg_pool3d(noise, 3, stride=1, padding=1, count_include_pad=False)
    clip = (0.6 * smooth / smooth.abs().amax().clamp_min(1e-12) + 0.4 * noise).clamp(-1, 1)
    return clip.to(dtype)


def calibrated_state_dict(
    in_channels: int = arch.RGB_CHANNELS,
    num_classes: int = arch.NUM_CLASSES_400,
    seed: int = 0,
    calibration_shape: Tuple[int, int, int] = CALIBRATION_SHAPE,
) -> Dict[str, torch.Tensor]:
    """A float32 native state_dict: He-initialised convs with calibrated batch norms."""
    g = torch.Generator().manual_seed(seed)
    # Unfused, so that the calibration hooks see every batch norm's input.
    model = InceptionI3d(num_classes, in_channels, fuse_bn=False).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("conv.weight"):
                fan_in = param[0].numel()
                param.copy_(torch.randn(param.shape, generator=g) * (2.0 / fan_in) ** 0.5)
            elif name.endswith("bn.bias"):
                param.copy_(torch.randn(param.shape, generator=g) * 0.2)
            elif name.endswith("conv.bias"):
                param.copy_(torch.randn(param.shape, generator=g) * 0.5)

    def calibrate(module: BatchNormNoScale, inputs: Tuple[torch.Tensor]) -> None:
        x = inputs[0]
        mean = x.mean(dim=(0, 2, 3, 4))
        var = x.var(dim=(0, 2, 3, 4), unbiased=False)
        n = mean.shape[0]
        module.running_mean.copy_(mean + 0.1 * var.sqrt() * torch.randn(n, generator=g))
        module.running_var.copy_(var * torch.empty(n).uniform_(0.8, 1.25, generator=g) + 1e-3)

    hooks = [m.register_forward_pre_hook(calibrate) for m in model.modules() if isinstance(m, BatchNormNoScale)]
    clip = random_clip((1, in_channels) + tuple(calibration_shape), seed=seed + 1)
    with torch.no_grad():
        logits = model(clip)
    for hook in hooks:
        hook.remove()
    with torch.no_grad():
        # Logits are linear in the classifier's weight: rescale it to the target spread.
        classifier = model.Logits.classifier.conv
        centred = logits - classifier.bias
        classifier.weight.mul_(LOGIT_STD / centred.std().clamp_min(1e-12))
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def synthetic_tf_arrays(release: str = "rgb_imagenet", seed: int = 0) -> Dict[str, np.ndarray]:
    """``{tf name: float32 array}`` with exactly the names, dtypes and shapes of a release's real index.

    Model tensors come from :func:`calibrated_state_dict`; optimizer slots
    (kin600's ``.../Momentum``) are filled with small seeded noise.
    """
    rel = RELEASES[release]
    state = calibrated_state_dict(rel.in_channels, rel.num_classes, seed)
    mapped = torch_to_tf_arrays({k: v.numpy() for k, v in state.items()}, scope=rel.scope)
    rng = np.random.default_rng(seed + 2)
    out: Dict[str, np.ndarray] = {}
    for name, dtype, shape in list_variables(release_index_path(release)):
        if name in mapped:
            out[name] = np.ascontiguousarray(mapped[name].reshape(shape).astype(dtype))
        elif name.endswith("/Momentum"):
            out[name] = (rng.standard_normal(shape) * 1e-3).astype(dtype)
        else:
            raise AssertionError(f"real index variable {name!r} has no synthetic value")
    missing = set(mapped) - set(out)
    if missing:
        raise AssertionError(f"synthetic tensors absent from the real index: {sorted(missing)[:3]}")
    return out


def write_synthetic_checkpoint(directory: "str | os.PathLike[str]", release: str = "rgb_imagenet", seed: int = 0) -> Path:
    """Write ``<directory>/model.ckpt.{index,data-00000-of-00001}`` and return the prefix."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    prefix = directory / "model.ckpt"
    write_checkpoint(prefix, synthetic_tf_arrays(release, seed))
    return prefix
