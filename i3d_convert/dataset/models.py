"""The network of each stream for a features run, and the identity (sha256) of its weights."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from i3d_convert import architecture as arch
from i3d_convert.errors import I3DConvertError

#: Weights used when a stream's weights are not given: DeepMind's ImageNet-pretrained releases.
DEFAULT_RELEASE = {"rgb": "rgb_imagenet", "flow": "flow_imagenet"}


@dataclass
class StreamModel:
    """One stream's model (eval mode, on its device) and where its weights came from."""

    stream: str
    model: torch.nn.Module
    weights: str
    sha256: str


def final_endpoint_for(endpoint: str) -> str:
    """The last layer a model must have to produce ``endpoint`` (``pool`` reads Mixed_5c)."""
    return "Mixed_5c" if endpoint == "pool" else endpoint


def load_stream_model(stream: str, spec: Optional[str], endpoint: str, device: torch.device,
                      allow_non_finite: bool = False, compile_pools: bool = False) -> StreamModel:
    """The model of ``stream`` from ``spec``: a weights file, a TF checkpoint or a release name
    (None: :data:`DEFAULT_RELEASE`). Its input channels must fit the stream (3 RGB, 2 flow).
    ``compile_pools``: :meth:`~i3d_convert.models.i3d.InceptionI3d.compile_max_pools` (same bits)."""
    from i3d_convert.weights.factory import i3d, resolve_weights, source_sha256

    spec = spec or DEFAULT_RELEASE[stream]
    path = resolve_weights(spec)
    model = i3d(DEFAULT_RELEASE[stream], weights=path, progress=False, allow_non_finite=allow_non_finite,
                final_endpoint=final_endpoint_for(endpoint))
    expected = arch.RGB_CHANNELS if stream == "rgb" else arch.FLOW_CHANNELS
    if model.in_channels != expected:
        raise I3DConvertError(f"the {stream} stream needs weights for {expected} input channels; "
                              f"these take {model.in_channels}", spec)
    if compile_pools:
        model.compile_max_pools()
    return StreamModel(stream, model.to(device).eval(), str(spec), source_sha256(path))
