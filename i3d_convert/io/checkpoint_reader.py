"""Open any TensorFlow checkpoint without TensorFlow: the reader front end.

Resolves every accepted spelling of a checkpoint path (prefix, ``.index``,
``.meta``, ``.data-*``, a V1 file, a folder with a ``checkpoint`` state file,
a SavedModel's ``variables/variables``) to a V2 bundle
(:mod:`i3d_convert.io.bundle_v2`) or a V1 file
(:mod:`i3d_convert.io.tf_v1_checkpoint`) and reads it through one
:class:`CheckpointReader`. Anything malformed raises
:class:`~i3d_convert.errors.CheckpointFormatError` naming the file.
"""

from __future__ import annotations

import codecs
import logging
import os
import re
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple, Union

import numpy as np

from i3d_convert.io import protowire as wire
from i3d_convert.errors import CheckpointFormatError
from i3d_convert.io.bundle_format import PathLike, TensorEntry, TensorNotFoundError, index_path_for
from i3d_convert.io.bundle_v2 import BundleV2
from i3d_convert.io.tf_v1_checkpoint import V1Checkpoint

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------- path resolution

_DATA_SUFFIX = re.compile(r"\.data-\d{5,}-of-\d{5,}$")
_STATE_LINE = re.compile(r'^\s*model_checkpoint_path\s*:\s*"((?:[^"\\]|\\.)*)"\s*$', re.MULTILINE)


def _resolve(path: PathLike) -> Tuple[str, str]:
    """``("V2", prefix)`` or ``("V1", file)`` for any accepted spelling of a checkpoint path."""
    try:
        return _resolve_path(os.fspath(path))
    except (OSError, ValueError) as exc:  # permission denied, NUL in the path, ...
        raise CheckpointFormatError(f"cannot access checkpoint path: {exc}", os.fspath(path)) from None


def _resolve_path(text: str) -> Tuple[str, str]:
    p = Path(text)
    if p.is_dir():
        return _resolve_directory(p)
    if text.endswith(".index"):
        if not p.exists():
            raise CheckpointFormatError("index file not found", p)
        return "V2", text[: -len(".index")]
    match = _DATA_SUFFIX.search(text)
    if match:
        prefix = text[: match.start()]
        if not index_path_for(prefix).exists():
            raise CheckpointFormatError(f"index file not found for data file {p.name}", index_path_for(prefix))
        return "V2", prefix
    if index_path_for(text).exists():
        return "V2", text
    if text.endswith(".meta") and index_path_for(text[: -len(".meta")]).exists():
        return "V2", text[: -len(".meta")]  # the MetaGraph beside a V2 checkpoint
    if p.is_file():
        return "V1", text
    raise CheckpointFormatError(f"checkpoint not found (neither this file nor {p.name}.index exists)", p)


def _resolve_directory(directory: Path) -> Tuple[str, str]:
    state = directory / "checkpoint"
    if state.is_file():
        target = _state_target(state)
        if target is not None:
            candidate = Path(target) if os.path.isabs(target) else directory / target
            if not (candidate.exists() or index_path_for(str(candidate)).exists()):
                candidate = directory / Path(target).name  # the folder was moved since it was written
            if candidate.is_dir():
                raise CheckpointFormatError(f"checkpoint state file names a directory: {target}", state)
            try:
                return _resolve_path(str(candidate))
            except CheckpointFormatError as exc:
                raise CheckpointFormatError(
                    f"checkpoint state file names {target!r}, which is not a readable checkpoint ({exc.problem})", state
                ) from None
    indexes = sorted(directory.glob("*.index"))
    if not indexes and (directory / "variables" / "variables.index").is_file():
        return "V2", str(directory / "variables" / "variables")  # a SavedModel / TF-Hub module folder
    if len(indexes) == 1:
        return "V2", str(indexes[0])[: -len(".index")]
    if len(indexes) > 1:
        names = ", ".join(p.name for p in indexes[:5]) + (", ..." if len(indexes) > 5 else "")
        raise CheckpointFormatError(
            f"directory holds {len(indexes)} checkpoints ({names}) and no 'checkpoint' state file; "
            "pass one prefix (ambiguous)",
            directory,
        )
    tables = [
        p for p in sorted(directory.iterdir())
        if p.is_file() and p.name != "checkpoint" and not _DATA_SUFFIX.search(p.name) and _has_table_magic(p)
    ]
    if len(tables) == 1:
        return "V1", str(tables[0])
    if len(tables) > 1:
        raise CheckpointFormatError(
            f"directory holds {len(tables)} V1 checkpoint files ({', '.join(p.name for p in tables[:5])}); "
            "pass one (ambiguous)",
            directory,
        )
    raise CheckpointFormatError("no checkpoint found in directory (no .index file, no V1 checkpoint)", directory)


def _state_target(state: Path) -> Optional[str]:
    """``model_checkpoint_path`` from a ``checkpoint`` state file (text-format CheckpointState)."""
    try:
        with open(state, "rb") as f:
            text = f.read(1 << 20).decode("utf-8")
        match = _STATE_LINE.search(text)
        if match is None:
            return None
        unescaped: bytes = codecs.escape_decode(match.group(1).encode("utf-8"))[0]  # type: ignore[attr-defined]
        return unescaped.decode("utf-8")
    except (OSError, UnicodeDecodeError, ValueError):
        raise CheckpointFormatError("unreadable checkpoint state file", state) from None


def _has_table_magic(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() < wire.FOOTER_SIZE:
                return False
            f.seek(-8, os.SEEK_END)
            return int.from_bytes(f.read(8), "little") == wire.TABLE_MAGIC
    except OSError:
        return False


# --------------------------------------------------------------------------- public reader


class CheckpointReader:
    """A TensorFlow checkpoint (V2 TensorBundle or V1 single file), opened for reading.

    ``path`` may be a prefix (``.../model.ckpt``), its ``.index``, ``.meta``
    or a ``.data-*`` file, a V1 checkpoint file, or a directory holding exactly
    one checkpoint (or a ``checkpoint`` state file naming one, or a SavedModel's
    ``variables/variables``). Opening parses and
    validates the index only; data shards are memory-mapped on first
    :meth:`read`, so listing works without them. Use as a context manager.
    """

    def __init__(self, path: PathLike, *, verify_crc: bool = True) -> None:
        kind, resolved = _resolve(path)
        self.verify_crc = verify_crc
        if kind == "V2":
            self._backend: Union[BundleV2, V1Checkpoint] = BundleV2(resolved, verify_crc)
        else:
            self._backend = V1Checkpoint(Path(resolved), verify_crc=verify_crc)
        #: The checkpoint prefix (V2) or file (V1).
        self.path = Path(resolved)
        #: ``"V2"`` or ``"V1"``.
        self.format: str = self._backend.format
        #: The ``.index`` file (V2) or the checkpoint file itself (V1).
        self.index_path: Path = self._backend.index_path
        #: ``num_shards``, ``endianness`` (0 = little), ``version`` and ``format``.
        self.header: Dict[str, object] = self._backend.header
        #: Every tensor by name, sorted, including ones that cannot be read.
        self.entries: Dict[str, TensorEntry] = self._backend.entries

    @property
    def data_paths(self) -> Tuple[Path, ...]:
        """The data shard files the index refers to (V1: the checkpoint file)."""
        return self._backend.data_paths

    def keys(self) -> List[str]:
        """All tensor names, sorted."""
        return list(self.entries)

    def __contains__(self, name: object) -> bool:
        return name in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries)

    def read(self, name: str) -> np.ndarray:
        """The tensor ``name`` as a read-only array with the entry's dtype and shape.

        V2: a zero-copy view of the memory-mapped data shard, crc32c-verified
        first when ``verify_crc``. Raises :class:`TensorNotFoundError` for an
        unknown name, :class:`ChecksumError` on a crc mismatch and
        :class:`CheckpointFormatError` for anything else wrong.
        """
        entry = self.entries.get(name)
        if entry is None:
            raise TensorNotFoundError(f"no tensor named {name!r} in checkpoint", self.index_path)
        return self._backend.read(entry)

    def release(self, name: str) -> None:
        """Best effort: let the OS drop ``name``'s bytes from this process's memory once a
        caller has copied them (arrays already returned stay valid and correct)."""
        entry = self.entries.get(name)
        release = getattr(self._backend, "release", None)
        if entry is not None and release is not None:
            release(entry)

    def close(self) -> None:
        """Release the data shard mappings (arrays already returned stay valid)."""
        self._backend.close()

    def __enter__(self) -> "CheckpointReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"CheckpointReader({str(self.path)!r}, format={self.format}, tensors={len(self.entries)})"


def list_variables(path: PathLike) -> List[Tuple[str, str, Tuple[int, ...]]]:
    """``(name, dtype name, shape)`` of every tensor, sorted by name (like ``tf.train.list_variables``)."""
    with CheckpointReader(path) as reader:
        return [(e.name, e.dtype_name, e.shape) for e in reader.entries.values()]


def load_tf_checkpoint(path: PathLike, *, verify_crc: bool = True) -> Dict[str, np.ndarray]:
    """Every numeric tensor by name (sorted), as read-only arrays (zero-copy views for V2).

    String, resource and variant tensors (e.g. TF2's ``_CHECKPOINTABLE_OBJECT_GRAPH``)
    are skipped and named in an INFO log record; anything else unreadable raises.
    """
    with CheckpointReader(path, verify_crc=verify_crc) as reader:
        skipped = [f"{e.name} ({e.dtype_name})" for e in reader.entries.values() if not e.numeric]
        if skipped:
            logger.info("%s: skipped non-numeric tensors: %s", reader.path, ", ".join(skipped))
        return {name: reader.read(name) for name, e in reader.entries.items() if e.numeric}



__all__ = ["CheckpointReader", "list_variables", "load_tf_checkpoint"]
