"""What every command of this project shares: one-line errors and one meaning of the exit status.

``python -m profiler.*`` and ``python -m reports.*`` all run through
:func:`run_cli`. Exit status:

- 0: done;
- 1: the work failed (some keys or networks failed, a worker was lost, the disk
  filled, an unexpected error);
- 2: bad input (a wrong flag or value, a missing or malformed file, an unknown
  block or network, a package that is not installed, a refused combination);
- 130: interrupted (Ctrl-C).

Every error is one line on stderr, never a traceback (``--debug`` shows it).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NoReturn

from tables.errors import one_line

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

#: Errors a user's input causes: exit status 2. An exception class may also say
#: so itself with a class attribute ``exit_status = 2``.
BAD_INPUT_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    LookupError,
    ImportError,
    FileNotFoundError,
    FileExistsError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
)


class UsageError(ValueError):
    """A command-line mistake: reported as one line, exit status 2."""


class WorkFailed(RuntimeError):
    """The work asked for could not be done (not the input's fault): one line, exit status 1."""


class CliParser(argparse.ArgumentParser):
    """``argparse`` whose usage errors are one line (``error: ... (see PROG --help)``), exit status 2.

    Every command gets ``--debug`` (show the traceback of an unexpected error,
    see :func:`run_cli`); the description and epilog keep their line breaks.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)
        self.add_argument("--debug", action="store_true", help="show the traceback of an unexpected error")

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"error: {one_line(message)} (see {self.prog} --help)\n")


def text_arg(value: str) -> str:
    """An ``argparse`` type for a path, name or list that may not be empty (``--out ''`` is refused)."""
    if not str(value).strip():
        raise argparse.ArgumentTypeError("empty value: give a path or a name")
    return value


@contextlib.contextmanager
def one_line_warnings() -> Iterator[None]:
    """Print every warning as one line on stderr (``warning: ...``), not Python's two-line format."""

    def show(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        print(f"warning: {one_line(str(message))}", file=sys.stderr)

    previous = warnings.showwarning
    warnings.showwarning = show  # type: ignore[assignment]
    try:
        yield
    finally:
        warnings.showwarning = previous


def exit_status(exc: BaseException) -> int:
    """The exit status an error ends a command with: 2 for bad input, 1 for failed work."""
    status = getattr(exc, "exit_status", None)
    if isinstance(status, int) and not isinstance(status, bool):
        return status
    return EXIT_USAGE if isinstance(exc, BAD_INPUT_ERRORS) else EXIT_FAILED


def report_error(exc: BaseException) -> int:
    """Print one line for ``exc`` on stderr; returns its exit status (see :func:`exit_status`).

    Errors of the kinds a command raises on purpose print as ``error: ...``;
    anything else is an internal error and says how to see the traceback.
    """
    status = exit_status(exc)
    expected = status == EXIT_USAGE or isinstance(exc, (RuntimeError, OSError)) or hasattr(exc, "exit_status")
    if isinstance(exc, ModuleNotFoundError) and exc.name and str(exc) == f"No module named {exc.name!r}":
        # a bare missing dependency (engines and matplotlib raise their own install hints)
        top = exc.name.split(".")[0]
        print(
            f"error: the Python module {top!r} is not installed; install the project and its dependencies "
            "with: pip install -e . (see the README)",
            file=sys.stderr,
        )
    elif expected:
        print(f"error: {one_line(exc)}", file=sys.stderr)
    else:
        print(
            f"internal error: {type(exc).__name__}: {one_line(exc)} (rerun with --debug for the traceback)",
            file=sys.stderr,
        )
    return status


def run_cli(
    run: Callable[[argparse.Namespace], int | None],
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None,
    *,
    interrupted: str = "interrupted",
) -> int:
    """Parse ``argv`` and call ``run(args)``; returns the exit status, turning every error into one line.

    ``--help`` returns 0; a usage error 2 (one line from :class:`CliParser`);
    Ctrl-C prints ``interrupted`` and returns 130. With ``--debug`` on the
    command line an unexpected error shows its traceback.
    """
    try:
        args = parser.parse_args(list(argv) if argv is not None else None)
    except SystemExit as exc:  # --help, or a usage error already printed by the parser
        code = exc.code
        return code if isinstance(code, int) else (EXIT_OK if code is None else EXIT_USAGE)
    try:
        with one_line_warnings():
            return int(run(args) or 0)
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        if getattr(args, "debug", False):
            raise
        return report_error(exc)


__all__ = [
    "BAD_INPUT_ERRORS",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "CliParser",
    "UsageError",
    "WorkFailed",
    "exit_status",
    "one_line_warnings",
    "report_error",
    "run_cli",
    "text_arg",
]
