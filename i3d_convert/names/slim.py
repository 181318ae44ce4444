"""TF-slim InceptionV1 names of I3D's layers (the 2D network I3D was inflated from)."""

from __future__ import annotations

#: Scope of every variable in TF-slim's ``inception_v1.ckpt``.
SLIM_SCOPE = "InceptionV1/"


def slim_name(i3d_name: str) -> str:
    """I3D scope -> TF-slim scope, segment by segment: ``Conv3d_`` -> ``Conv2d_``, ``MaxPool3d_`` -> ``MaxPool_``.

    ``Mixed_5b/Branch_2/Conv3d_0a_3x3`` -> ``Mixed_5b/Branch_2/Conv2d_0a_3x3``.
    """
    def one(segment: str) -> str:
        if segment.startswith("Conv3d_"):
            return "Conv2d_" + segment[len("Conv3d_"):]
        if segment.startswith("MaxPool3d_"):
            return "MaxPool_" + segment[len("MaxPool3d_"):]
        return segment

    return "/".join(one(s) for s in i3d_name.split("/"))
