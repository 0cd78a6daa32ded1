"""The command line only: parse arguments, call the library, print.

Each subcommand lives in its own module exposing ``register(subparsers)``; the module sets
``func`` on its parser. Exit codes (docs/architecture.md): 0 success (partial parse errors are
reported and counted), 1 when an input could not be read at all or no rule could be loaded,
2 usage errors, 130 Ctrl-C, 143 SIGTERM (129 SIGHUP): those unwind, so temporary files go.
"""

from __future__ import annotations

import argparse
import atexit
import gc
import importlib
import os
import signal
import sys
import threading
import types
from typing import Any

from scmwatch import __version__
from scmwatch.codememo import remembered


class Parser(argparse.ArgumentParser):
    """Every scmwatch parser, subcommands included (``add_subparsers`` reuses this class): no
    prefix matching, so a mistyped ``--rule`` is an error instead of silently meaning ``--rules``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)


# subcommand -> its module under scmwatch.cli, in the order `--help` lists them
COMMANDS = ("hunt", "watch", "events", "rules", "simulate", "audit", "query", "report", "serve")


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser of every subcommand, or, when ``argv`` names one, of that one only.

    Each subcommand module imports what it runs (the audit checks, asyncio for the listeners,
    the simulator ...): importing all of them cost ~0.1 s of every ``scmwatch hunt``. ``argv``'s
    first word is the subcommand (there are no global options with values); anything else,
    ``--help`` or a mistyped command included, gets the full parser."""
    parser = Parser(
        prog="scmwatch",
        description="Find abuse of the Windows Service Control Manager (T1569.002) in event logs.",
    )
    parser.add_argument("--version", action="version", version=f"scmwatch {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = argv[0] if argv and argv[0] in COMMANDS else None
    # imported here, not at the top: subcommand modules import Terminated from this package
    for name in COMMANDS:
        if chosen is None or name == chosen:
            importlib.import_module(f"scmwatch.cli.{name}").register(subparsers)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP: unwinds like Ctrl-C, so every ``finally`` (spill directory, partial
    output files) runs before the process exits."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _terminate(signum: int, frame: object) -> None:
    raise Terminated(signum)


def _on_termination_signals() -> dict[int, Any]:
    """Turn SIGTERM/SIGHUP into :class:`Terminated` (main thread only; forked hunt workers
    restore the defaults, see ``scmwatch.hunt``); returns the handlers replaced."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    old = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) == signal.SIG_DFL:
            old[sig] = signal.signal(sig, _terminate)
    return old


class _Deferred(types.ModuleType):
    """Stands in ``sys.modules`` for a module not imported yet: ``import name`` gets it, and its
    first attribute lookup imports the real module, which then replaces it there and answers
    every lookup through it. (``importlib.util.LazyLoader`` does not defer ``import name``
    itself: the import statement reads the module's ``__spec__``, which runs the body.)"""

    def __getattr__(self, attr: str) -> Any:
        real = self.__dict__.get("_real")
        if real is None:
            if sys.modules.get(self.__name__) is self:
                del sys.modules[self.__name__]
            real = self._real = importlib.import_module(self.__name__)
        return getattr(real, attr)


def _defer(name: str) -> None:
    """Import module ``name`` at its first use instead of at its first ``import`` (nothing when
    it is imported already)."""
    if name not in sys.modules:
        sys.modules[name] = _Deferred(name)


def _build_lasting(argv: list[str]) -> argparse.ArgumentParser:
    """:func:`build_parser` in a process that is the command's own (:func:`entry`): the
    subcommand's modules live until it exits, so the objects their import allocates go to the
    collector's permanent generation (``gc.freeze``) instead of being walked again and again by
    the collections those allocations trigger. Importing ``hunt`` and what it runs: 462M -> 421M
    instructions (callgrind), ~7 ms of every start. The code their dataclasses and named tuples
    generate comes compiled from the cache (:mod:`scmwatch.codememo`).

    ``dataclasses`` imports ``inspect`` (with ``ast``, ``dis``, ``tokenize``: ~5 ms, ~4.5% of a
    hunt's start before its worker forks) for one use, the generated docstring of a class
    without one; the classes ``hunt`` runs have theirs, so there ``inspect`` is deferred."""
    if argv[:1] == ["hunt"]:
        _defer("inspect")
    was = gc.isenabled()
    gc.disable()
    try:
        with remembered(argv[0] if argv and argv[0] in COMMANDS else "scmwatch"):
            return build_parser(argv)
    finally:
        gc.freeze()
        if was:
            gc.enable()


def main(argv: list[str] | None = None, own_process: bool = False) -> int:
    """Run one command; ``own_process``: the process ends with it (:func:`entry`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _build_lasting(argv) if own_process else build_parser(argv)
    args = parser.parse_args(argv)
    args.argv = argv  # as given: recorded by `hunt --case`
    args.own_process = own_process
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    replaced = _on_termination_signals()
    try:
        return int(args.func(args) or 0)
    except Terminated as exc:
        print(f"scmwatch: terminated ({exc})", file=sys.stderr)
        return 128 + exc.signum
    except KeyboardInterrupt:
        print("scmwatch: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `scmwatch ... | head`: the reader went away; not an error worth a message. Output still
        # buffered would fail again at exit (exit code 120), so stdout goes to /dev/null.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    finally:
        for sig, handler in replaced.items():
            signal.signal(sig, handler)


def entry() -> None:
    """The ``scmwatch`` console script and ``python -m scmwatch``: :func:`main`, then exit.

    A plain hunt (no ``--case``, no ``--cluster``) ends with ``os._exit`` once its standard
    streams are flushed and the ``atexit`` handlers ran: tearing the interpreter down freed the
    loaded rule set object by object, ~0.1 s of a dev-corpus hunt with all SigmaHQ (measured)
    for nothing. By then the hunt has closed its output, summary and spill files; the other
    commands (servers, stores, the cluster) exit the ordinary way."""
    code = main(own_process=True)
    argv = sys.argv[1:]
    options = {a.split("=", 1)[0] for a in argv}
    if argv[:1] == ["hunt"] and not options & {"--case", "--cluster"}:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except (OSError, ValueError):
            sys.exit(code)  # the ordinary exit reports what it can
        atexit._run_exitfuncs()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    entry()
