"""How every command prints: one console factory, tables that degrade to plain lines.

On a terminal, rich renders as usual. When stdout is not a terminal (a pipe, a
file, a test), nothing is ever wrapped or cut at a width (``COLUMNS`` and the
80-column default of rich are ignored): a line holds a whole path or variable
name, so ``grep``/``cut`` and scripts see what was printed. Tables then become
a title line and tab-separated rows.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterable, Iterator, Optional, Sequence

#: Settings of every Typer app of the package: click's plain help (flags read ``--flag`` or
#: ``--flag/--no-flag``, never ``<bool>``; option names are never cut with an ellipsis) and no
#: pretty tracebacks.
APP_SETTINGS = dict(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                    rich_markup_mode=None, context_settings={"max_content_width": 100})

#: Width of a console that is not a terminal: wide enough that rich never wraps a line.
UNWRAPPED_WIDTH = 1_000_000


def is_terminal(stderr: bool = False) -> bool:
    """Whether the stream the CLI prints to is an interactive terminal."""
    stream = sys.stderr if stderr else sys.stdout
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


def make_console(stderr: bool = False):
    """The rich console every command prints through (see the module docstring)."""
    from rich.console import Console

    if is_terminal(stderr):
        return Console(highlight=False, stderr=stderr)
    return Console(highlight=False, stderr=stderr, soft_wrap=True, width=UNWRAPPED_WIDTH,
                   no_color=True, emoji=False)


def whole_command_descriptions(cli_app) -> None:
    """Give each command of ``cli_app`` its docstring's first paragraph as its short help, so the
    command list of ``--help`` shows (and wraps) the whole description instead of cutting it with "…"."""
    import inspect

    for info in cli_app.registered_commands:
        doc = inspect.getdoc(info.callback) or ""
        if info.short_help is None and doc:
            info.short_help = " ".join(doc.split("\n\n")[0].split())


def counted(n: int, noun: str) -> str:
    """``"1 video"``, ``"2 videos"``, ``"0 videos"``: ``n`` and ``noun`` (plural: ``noun + "s"``)."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def plain(text: str) -> str:
    """``text`` with rich markup (``[bold red]FAIL[/]``) removed."""
    from rich.text import Text

    return Text.from_markup(text).plain


def print_table(console, title: Optional[str], columns: Sequence[str], rows: Iterable[Sequence[str]],
                right_aligned: Sequence[str] = ()) -> None:
    """A rich table on a terminal; otherwise ``title`` then tab-separated header and rows, one per line."""
    rows = [list(row) for row in rows]
    if not is_terminal(getattr(console, "stderr", False)):
        lines = [] if title is None else [plain(title)]
        lines += ["\t".join(plain(cell) for cell in line) for line in [list(columns)] + rows]
        console.file.write("\n".join(lines) + "\n")
        return
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, justify="right" if column in right_aligned else "left")
    for row in rows:
        table.add_row(*row)
    console.print(table)


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null for the block: TensorFlow's C++ start-up lines
    (oneDNN notice, ``failed call to cuInit``) bypass ``sys.stderr`` and ``TF_CPP_MIN_LOG_LEVEL``."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 2)
        os.close(null)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def quiet_tensorflow_logs() -> None:
    """Keep TensorFlow's C++ INFO/WARNING lines off stderr if it is imported later (unless the user set a level)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def import_tensorflow_quietly() -> None:
    """Import the TensorFlow reference (if TensorFlow is installed) without its start-up noise."""
    import importlib.util

    quiet_tensorflow_logs()
    if importlib.util.find_spec("tensorflow") is None:
        return
    with native_stderr_silenced():
        importlib.import_module("i3d_convert.reference.tf_runtime")
