"""The package's one exception type.

Every error that a user can cause with a bad file or a bad argument is an
:class:`I3DConvertError` whose message names the file and the problem. The CLI
catches it once and prints that message as one line; anything else reaching
the user is a bug.
"""

from __future__ import annotations

import os
from typing import Optional, Union

PathLike = Union[str, "os.PathLike[str]"]


class I3DConvertError(Exception):
    """A problem with an input file, an output path or an argument."""

    def __init__(self, message: str, path: Optional[PathLike] = None) -> None:
        self.path = None if path is None else os.fspath(path)
        self.problem = message
        super().__init__(f"{self.path}: {message}" if self.path else message)


class CheckpointFormatError(I3DConvertError):
    """The file is not a readable checkpoint: bad magic, footer, block, varint, proto or range."""


class ChecksumError(CheckpointFormatError):
    """A tensor's bytes do not match the crc32c stored for it."""


class MappingError(I3DConvertError):
    """Checkpoint variables do not map one-to-one onto the model's state_dict."""


class OutputExistsError(I3DConvertError):
    """The output path exists and overwriting was not asked for."""


def problem_with(exc: BaseException, path: PathLike) -> str:
    """``exc`` as one line for a caller that names ``path`` itself: the problem alone when ``exc`` is about
    ``path`` (no ``path: path: ...``), an ``OSError`` as its reason (``No such file or directory``, not
    ``[Errno 2] ...``), anything else as its message."""
    about = os.fspath(path)
    if isinstance(exc, I3DConvertError):
        text = exc.problem if exc.path in (None, about) else str(exc)
    elif isinstance(exc, OSError) and exc.strerror:
        filename = exc.filename if exc.filename is None else os.fspath(exc.filename)
        text = exc.strerror if filename in (None, about) else f"{filename}: {exc.strerror}"
    else:
        text = str(exc)
    return " ".join(text.split())
