"""Write outputs all-or-nothing.

An output is written to a temporary file in its destination folder and moved
into place only when complete, so a crash, Ctrl-C or SIGTERM never leaves a
partial file under the real name, and two writers racing for one path leave one
complete file (``os.replace`` is atomic). Without ``overwrite`` an existing file
is never clobbered: the finished file is hard-linked into place, which fails if
the name was taken in the meantime.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from pathlib import Path
from typing import Iterator

from i3d_convert.errors import OutputExistsError, I3DConvertError

TMP_SUFFIX = ".i3d-tmp"


def _temporary_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{TMP_SUFFIX}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(path: Path) -> int:
    """Delete temporaries left for ``path`` by killed processes (SIGKILL); return how many."""
    removed = 0
    for stray in path.parent.glob(f".{path.name}.*{TMP_SUFFIX}"):
        parts = stray.name[len(path.name) + 2 : -len(TMP_SUFFIX)].split(".")
        if len(parts) == 2 and parts[0].isdigit() and not _pid_alive(int(parts[0])):
            with contextlib.suppress(FileNotFoundError):
                stray.unlink()
                removed += 1
    return removed


def check_output_path(path: "str | os.PathLike[str]", overwrite: bool = False) -> Path:
    """Fail early (before any work) if ``path`` exists and may not be overwritten, or its folder is missing."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError("output exists; pass --overwrite to replace it", path)
    if not path.parent.is_dir():
        raise I3DConvertError("output folder does not exist", path.parent)
    return path


@contextlib.contextmanager
def atomic_output(path: "str | os.PathLike[str]", overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write; on success it becomes ``path``, on any exception it is removed."""
    path = check_output_path(path, overwrite)
    remove_stale_temporaries(path)
    tmp = _temporary_name(path)
    try:
        yield tmp
        if not tmp.exists():
            raise I3DConvertError("nothing was written", path)
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise OutputExistsError("output exists; pass --overwrite to replace it", path) from None
            except OSError as exc:  # file systems without hard links
                if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                    raise
                if path.exists():
                    raise OutputExistsError("output exists; pass --overwrite to replace it", path) from None
                os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
