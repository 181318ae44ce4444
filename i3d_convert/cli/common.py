"""What every command shares: :func:`run_app` (one error handler, signals, warnings), JSON output,
the CLI-side NaN/inf check, and the map from a library argument to its flag.

The command modules import this module; :mod:`i3d_convert.cli.app` imports the
command modules only to register them, so nothing here imports ``app``.

Every :class:`~i3d_convert.errors.I3DConvertError` (and every ``OSError``
naming a file) is caught once, in :func:`run_app`, and printed as one line on
stderr with exit code 1; the argument an error is about (``error.argument``, data, not parsed
from the text) is written as the command's flag (``pass allow_non_finite=True`` -> ``pass
--allow-non-finite``). ``--debug`` (or ``I3D_CONVERT_DEBUG=1``) shows
the traceback instead. Library warnings print as one line
``PROG: warning: ...``. SIGINT and SIGTERM print one line and exit 130 / 143.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import warnings
from pathlib import Path
from typing import Annotated, Any, Dict, List, NoReturn, Optional, Union

import typer

from i3d_convert.errors import I3DConvertError

#: What a command has finished and keeps even if it is interrupted later: files (``demo --workdir``) or
#: a description (a dataset run's finished videos, and how to resume).
KEPT_OUTPUTS: List[Union[Path, str]] = []

#: Library argument names that differ from the name of the command parameter that sets them.
ARGUMENT_ALIASES = {"torch_weights": "torch_file", "bn_shape_5d": "bn_5d"}


# ------------------------------------------------------------------ options several commands share
# Declared once; a command takes ``overwrite: Overwrite = False`` (the default stays in the signature).
# typer reads the annotations by name, so a command module imports the alias it uses.

Overwrite = Annotated[bool, typer.Option("--overwrite/--no-overwrite", help="Replace an existing output.")]
AllowNonFinite = Annotated[bool, typer.Option(
    "--allow-non-finite/--no-allow-non-finite",
    help="Use weights with NaN or inf values (with a warning) instead of failing.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing on success.")]
JsonSummary = Annotated[bool, typer.Option("--json", help="Print a JSON summary on stdout.")]
CompilePools = Annotated[bool, typer.Option(
    "--compile-pools", help="CPU, long runs: max pools compiled by TorchInductor where a check on the first clip "
    "shape finds them bit-identical and faster (needs a C++ compiler; seconds of compilation; docs/benchmarks.md).")]


class _State:
    debug = False


def set_debug(debug: bool) -> None:
    """``--debug`` given: :func:`run_app` re-raises errors (a traceback) instead of printing one line."""
    _State.debug = _State.debug or debug


def print_json(obj: Any) -> None:
    """``obj`` as indented JSON on stdout, one trailing newline."""
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def refuse_or_warn_non_finite(problem: str, source: Any, allow: bool) -> None:
    """For what the library does not check (a command's own output): refuse ``problem`` (one line naming
    ``source``) unless ``allow``; then a warning. ``problem`` says which values are NaN or inf."""
    if not allow:
        raise I3DConvertError(f"{problem}; pass --allow-non-finite to use them anyway", source)
    warnings.warn(f"{source}: {problem}; the results are not meaningful", stacklevel=2)


# ------------------------------------------------------------------ flags in library messages


def command_flags(cli_app: typer.Typer, args: List[str]) -> Dict[str, Any]:
    """``{parameter name: click option}`` of the command ``args`` invoke (empty when none is named).

    Duck-typed: typer may bring its own copy of click, so ``isinstance(..., click.Option)`` is not used.
    """
    command: Any = typer.main.get_command(cli_app)
    commands = getattr(command, "commands", None)
    if commands is not None:  # a group: the first argument that names one of its commands
        name = next((a for a in args if a in commands), None)
        command = commands.get(name) if name else None
    if command is None:
        return {}
    return {p.name: p for p in command.params if getattr(p, "param_type_name", "") == "option" and p.name}


def error_line(exc: I3DConvertError, options: Dict[str, Any]) -> str:
    """``exc``'s one-line message with the argument it is about (``exc.argument``) written as the command's
    flag (``pass allow_non_finite=True`` -> ``pass --allow-non-finite``); unchanged when no flag sets it."""
    option = options.get(ARGUMENT_ALIASES.get(exc.argument, exc.argument)) if exc.argument else None
    flag = next((o for o in option.opts if o.startswith("--")), None) if option is not None else None
    if flag is None:
        return str(exc)
    if option.is_flag:
        negative = next((o for o in option.secondary_opts if o.startswith("--")), None)
        return exc.render(flag, true=flag, false=negative)
    return exc.render(flag, equals=" ")


# ------------------------------------------------------------------ signals and warnings


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived; unwinds like Ctrl-C (so partial outputs are removed) past typer's handlers."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_interrupted(signum, frame):  # pragma: no cover - exercised in subprocess tests
    raise Interrupted(signum)


def install_signal_handlers() -> None:
    """Make SIGINT and SIGTERM raise :class:`Interrupted` (caught by :func:`run_app`)."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _raise_interrupted)


def report_interrupted(prog: str, signum: int) -> NoReturn:
    """One line on stderr (what was kept, if anything) and exit 128 + signal number (130 / 143)."""
    for other in (signal.SIGINT, signal.SIGTERM):
        signal.signal(other, signal.SIG_IGN)  # a second Ctrl-C must not interrupt the clean exit
    kept = "; kept " + ", ".join(str(p) for p in KEPT_OUTPUTS) if KEPT_OUTPUTS else "; nothing written"
    sys.stderr.write(f"{prog}: interrupted{kept}\n")
    sys.stderr.flush()
    sys.exit(128 + signum)


def _warning_printer(prog: str):
    """A ``warnings.showwarning`` that prints ``PROG: warning: MESSAGE`` as one line on stderr."""
    def show(message, category, filename, lineno, file=None, line=None) -> None:
        text = " ".join(str(message).split())
        (file or sys.stderr).write(f"{prog}: warning: {text}\n")

    return show


def run_app(cli_app: typer.Typer, prog: str, argv: Optional[List[str]] = None) -> None:
    """Run a typer app as a console script (see the module docstring).

    SIGINT/SIGTERM: one line on stderr, exit 130/143 (partial outputs are removed on the way out).
    An :class:`I3DConvertError`, or an ``OSError`` naming a file: one line on stderr, exit 1
    (``--debug`` or ``I3D_CONVERT_DEBUG=1`` re-raise it).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    _State.debug = "--debug" in args or os.environ.get("I3D_CONVERT_DEBUG") == "1"
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    install_signal_handlers()
    KEPT_OUTPUTS.clear()
    try:
        with warnings.catch_warnings():  # in-process callers (tests, notebooks) get their own printer back
            warnings.simplefilter("default")
            warnings.showwarning = _warning_printer(prog)
            cli_app(args=args, prog_name=prog)
    except Interrupted as exc:
        report_interrupted(prog, exc.signum)
    except KeyboardInterrupt:
        report_interrupted(prog, signal.SIGINT)
    except (I3DConvertError, OSError) as exc:
        if _State.debug or (isinstance(exc, OSError) and not exc.filename):
            raise
        message = (error_line(exc, command_flags(cli_app, args)) if isinstance(exc, I3DConvertError)
                   else f"{exc.filename}: {exc.strerror or exc}")
        sys.stderr.write(f"{prog}: error: {message}\n")
        sys.exit(1)
    finally:  # in-process callers get their own handlers back
        for signum, handler in previous.items():
            signal.signal(signum, handler)
