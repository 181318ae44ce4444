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
import glob
import os
import secrets
from pathlib import Path
from typing import Iterable, Iterator, List

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


def _input_files(source: Path) -> List[Path]:
    """The files an input argument stands for: itself, a folder's files, or a checkpoint prefix's files."""
    if source.is_file():
        return [source]
    if source.is_dir():
        return [child for child in source.iterdir() if child.is_file()]
    return [child for child in source.parent.glob(f"{glob.escape(source.name)}.*") if child.is_file()]


def _is_an_input(path: Path, inputs: Iterable["str | os.PathLike[str]"]) -> bool:
    if not path.exists():
        return False
    for source in inputs:
        for candidate in _input_files(Path(source)):
            with contextlib.suppress(OSError):
                if os.path.samefile(candidate, path):
                    return True
    return False


def _probe_writable(folder: Path, path: Path) -> None:
    """Create and remove a temporary file in ``folder``: the only test of writability that holds for root too."""
    probe = _temporary_name(path)
    try:
        fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except OSError as exc:
        raise I3DConvertError(f"cannot write in this folder ({exc.strerror})", folder) from None
    os.close(fd)
    with contextlib.suppress(FileNotFoundError):
        probe.unlink()


def check_output_path(path: "str | os.PathLike[str]", overwrite: bool = False,
                      inputs: Iterable["str | os.PathLike[str]"] = ()) -> Path:
    """Fail early (before any work) unless ``path`` can be written.

    Refused: an existing file without ``overwrite``; a folder; a missing or
    unwritable parent folder (or one that is a file); a file that is one of
    ``inputs`` (the command's own input files, checkpoint prefixes and folders
    included; symlinks and hard links are the same file).
    """
    path = Path(path)
    if path.is_dir():
        raise I3DConvertError("output path is a folder; give a file name", path)
    if _is_an_input(path, inputs):
        raise I3DConvertError("output would overwrite one of this command's own inputs", path)
    if path.exists() and not overwrite:
        raise OutputExistsError("output exists; pass {arg}=True to replace it", path, argument="overwrite")
    if path.parent.exists() and not path.parent.is_dir():
        raise I3DConvertError("output folder is a file, not a folder", path.parent)
    if not path.parent.is_dir():
        raise I3DConvertError("output folder does not exist", path.parent)
    _probe_writable(path.parent, path)
    return path


@contextlib.contextmanager
def created_folder(folder: "str | os.PathLike[str]") -> Iterator[Path]:
    """Create ``folder`` and its missing parents (like TensorFlow's saver); if the block raises, remove
    again those created here that are still empty, so a failed command leaves no empty folder behind.

    A path component that is a file, or a folder that cannot be created, is an :class:`I3DConvertError`
    naming it.
    """
    folder = Path(folder)
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise I3DConvertError("output folder is a file, not a folder", folder) from None
    except OSError as exc:
        raise I3DConvertError(f"cannot create the output folder ({exc.strerror or exc})", folder) from None
    try:
        yield folder
    except BaseException:
        for created in missing:  # deepest first
            with contextlib.suppress(OSError):
                created.rmdir()
        raise


@contextlib.contextmanager
def atomic_output(path: "str | os.PathLike[str]", overwrite: bool = False,
                  inputs: Iterable["str | os.PathLike[str]"] = ()) -> Iterator[Path]:
    """Yield a temporary path to write; on success it becomes ``path``, on any exception it is removed.

    ``path`` is checked first (:func:`check_output_path`); an ``OSError`` while
    writing or moving into place (disk full, read-only file system) becomes an
    :class:`I3DConvertError` naming ``path``.
    """
    path = check_output_path(path, overwrite, inputs)
    remove_stale_temporaries(path)
    tmp = _temporary_name(path)
    try:
        try:
            yield tmp
            if not tmp.exists():
                raise I3DConvertError("nothing was written", path)
            if tmp.is_file():  # writers that create 0600 files (safetensors): follow the umask like any other
                os.chmod(tmp, 0o666 & ~_umask())
            _move_into_place(tmp, path, overwrite)
        except OSError as exc:
            raise I3DConvertError(f"cannot write ({exc.strerror or exc})", path) from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _umask() -> int:
    mask = os.umask(0o022)  # the only way to read it is to set it; set back at once
    os.umask(mask)
    return mask


def _move_into_place(tmp: Path, path: Path, overwrite: bool) -> None:
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise OutputExistsError("output exists; pass {arg}=True to replace it", path, argument="overwrite") from None
    except OSError as exc:  # file systems without hard links
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        if path.exists():
            raise OutputExistsError("output exists; pass {arg}=True to replace it", path, argument="overwrite") from None
        os.replace(tmp, path)
