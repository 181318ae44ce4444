"""Console-script entry points of ``i3d-convert`` and ``i3d-inflate``.

This module imports nothing heavy: it installs the SIGINT/SIGTERM handlers
*before* ``i3d_convert`` (and with it torch) is imported, so Ctrl-C or a
SIGTERM during start-up prints one line and exits 130/143 instead of a
traceback. :func:`i3d_convert.cli.app.run_app` takes over once imported.
"""

from __future__ import annotations

import importlib
import signal
import sys

_received = [int(signal.SIGINT)]
#: Set by the handler: a library may swallow the KeyboardInterrupt inside its own import (a bare
#: ``except:`` around an optional import), so the signal is also remembered here.
_pending = [False]


def _on_signal(signum, frame):  # pragma: no cover - exercised in subprocess tests
    _received[0] = signum
    _pending[0] = True
    raise KeyboardInterrupt


def _launch(module: str, prog: str) -> None:
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _on_signal)
    try:
        main = importlib.import_module(module).main
        # A console script owns its process: keep freed memory for the next forward (0 page
        # faults per forward instead of 38k-339k; see i3d_convert.device.reuse_freed_memory).
        importlib.import_module("i3d_convert.device").reuse_freed_memory()
        if _pending[0]:
            raise KeyboardInterrupt
        main()
    except KeyboardInterrupt:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_IGN)
        sys.stderr.write(f"{prog}: interrupted; nothing written\n")
        sys.stderr.flush()
        sys.exit(128 + _received[0])


def i3d_convert() -> None:
    """``i3d-convert``."""
    _launch("i3d_convert.cli.app", "i3d-convert")


def i3d_inflate() -> None:
    """``i3d-inflate``."""
    _launch("i3d_convert.cli.inflate", "i3d-inflate")
