"""What every ``python -m profiler.*`` command shares: one-line errors and exit codes.

A mistake a user can make (a wrong flag, a missing file, an unknown block, a
missing backend) is printed as one line on stderr with exit status 2; an
unexpected error as one line with status 1 and a hint to rerun with
``--debug`` for the traceback; Ctrl-C as one line with status 130.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn


class UsageError(ValueError):
    """A command-line mistake: reported as one line, exit status 2."""


class CliParser(argparse.ArgumentParser):
    """``argparse`` whose usage errors are one line (``error: ... (see --help)``), exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none)."""
    text = str(exc).strip()
    if isinstance(exc, KeyError) and len(exc.args) == 1 and isinstance(exc.args[0], str):
        text = exc.args[0].strip()
    return text.splitlines()[0] if text else type(exc).__name__


def report_error(exc: BaseException) -> int:
    """Print one line for ``exc``; 2 for an error a user can cause, 1 for an unexpected one."""
    if isinstance(exc, (ValueError, KeyError, OSError, RuntimeError, ImportError)):
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    print(
        f"internal error: {type(exc).__name__}: {one_line(exc)} (rerun with --debug for the traceback)",
        file=sys.stderr,
    )
    return 1


def run_cli(
    run: Callable[[argparse.Namespace], int],
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None,
    *,
    interrupted: str = "interrupted",
) -> int:
    """Parse ``argv`` and call ``run(args)``, turning every error into one line and an exit status."""
    args = parser.parse_args(argv)
    try:
        return run(args)
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        return 130
    except Exception as exc:
        if getattr(args, "debug", False):
            raise
        return report_error(exc)
