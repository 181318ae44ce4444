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
