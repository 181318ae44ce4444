"""Per-video feature files under OUTDIR, written atomically.

One stream: ``OUTDIR/<relative>.npy`` (``[windows, ...]`` float32), unless ``safetensors`` is
asked for. Both streams: ``OUTDIR/<relative>.safetensors`` with tensors ``rgb``, ``flow`` and,
for the Logits endpoint, ``joint`` (their sum). ``<relative>`` keeps the source's suffix
(``a/b.mp4`` -> ``a/b.mp4.npy``) so two videos never share an output.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Sequence

import numpy as np

from i3d_convert.errors import I3DConvertError
from i3d_convert.io.atomic import atomic_output

FORMATS = ("auto", "npy", "safetensors")
#: Suffixes of files, never of an output folder: ``-o all.npy`` for a folder input is a mistake, not a folder name.
FILE_SUFFIXES = (".npy", ".npz", ".safetensors", ".pt", ".pth", ".json", ".jsonl", ".csv", ".txt", ".h5", ".pkl")


def check_output_folder(outdir: Path) -> None:
    """Refuse, before anything is created, an ``outdir`` that is a file or is named like one (``all.npy``):
    a dataset run writes a folder (one output per video and ``manifest.jsonl``). An existing folder passes."""
    outdir = Path(outdir)
    if outdir.is_dir():
        return
    what = "is a file" if outdir.exists() else f"is named like a {outdir.suffix} file"
    if outdir.exists() or outdir.suffix.lower() in FILE_SUFFIXES:
        raise I3DConvertError(f"this run writes a folder (one output per video and manifest.jsonl) and the output "
                              f"{what}; give a folder name such as {outdir.with_suffix('').name}/ (a single "
                              "video or clip can go to one .npy file)", outdir)


def output_name(relative: str, streams: Sequence[str], output_format: str = "auto") -> str:
    """The output file of a video, relative to OUTDIR."""
    if output_format not in FORMATS:
        raise I3DConvertError(f"output_format must be one of {', '.join(FORMATS)}, got {output_format!r}")
    if output_format == "npy" and len(streams) > 1:
        raise I3DConvertError("output_format 'npy' holds one stream; two streams need 'safetensors'")
    use_npy = output_format == "npy" or (output_format == "auto" and len(streams) == 1)
    return relative + (".npy" if use_npy else ".safetensors")


def write_output(path: Path, arrays: Dict[str, np.ndarray], metadata: Dict[str, str]) -> None:
    """Write one video's features (``{stream: array}``) to ``path`` (.npy: the only array)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path, overwrite=True) as tmp:
        if path.suffix == ".npy":
            (array,) = arrays.values()
            with open(tmp, "wb") as f:
                np.save(f, np.ascontiguousarray(array), allow_pickle=False)
        else:
            from safetensors.numpy import save_file

            save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(tmp),
                      metadata={k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()})


def read_output(path: Path) -> Dict[str, np.ndarray]:
    """``{stream: array}`` of a feature file (``.npy`` gives ``{"features": array}``)."""
    if path.suffix == ".npy":
        return {"features": np.load(path, allow_pickle=False)}
    from safetensors.numpy import load_file

    return load_file(str(path))
