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
    """A problem with an input file, an output path or an argument.

    ``argument``: the Python argument the problem is about (``"layout"``, ``"allow_non_finite"``), as
    data, so a front end can name its own flag for it. ``message`` may write it as ``{arg}``
    (``"pass {arg}=True to use them anyway"``): ``str(error)`` shows the argument's Python name there,
    :meth:`render` whatever name the caller gives it.
    """

    def __init__(self, message: str, path: Optional[PathLike] = None, *, argument: Optional[str] = None) -> None:
        self.path = None if path is None else os.fspath(path)
        self.argument = argument
        self.template = message
        self.problem = self._fill(argument or "")
        super().__init__(self.render())

    def _fill(self, name: str, true: Optional[str] = None, false: Optional[str] = None, equals: str = "=") -> str:
        text = self.template
        if true is not None:
            text = text.replace("{arg}=True", true)
        if false is not None:
            text = text.replace("{arg}=False", false)
        return text.replace("{arg}=", name + equals).replace("{arg}", name)

    def render(self, name: Optional[str] = None, *, true: Optional[str] = None, false: Optional[str] = None,
               equals: str = "=") -> str:
        """The one-line message, the argument written as ``name`` (its Python name by default) and ``{arg}=V``
        as ``name + equals + V``; ``true``/``false`` replace ``{arg}=True``/``{arg}=False`` (a boolean flag's
        two spellings)."""
        problem = self._fill((self.argument or "") if name is None else name, true, false, equals)
        return f"{self.path}: {problem}" if self.path else problem


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
