"""The one-line text of an error: what a CLI prints and what a failed row stores.

Every command prints a mistake as one line on stderr, and a table stores a
failed key's error as one line in its ``error`` column; both come from here.
"""

from __future__ import annotations

import errno
import re

#: Longest one-line message a command prints (the rest is cut with an ellipsis).
MAX_MESSAGE_CHARS = 2000


def one_line(exc: BaseException | str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """An exception's message (or a text) on one line, at most ``limit`` characters.

    Lines are joined with ``"; "`` and runs of blanks collapsed; a ``KeyError``
    loses the quotes ``str()`` puts around its argument; an exception without
    a message gives its type name.
    """
    if isinstance(exc, BaseException):
        if isinstance(exc, KeyError) and len(exc.args) == 1 and isinstance(exc.args[0], str):
            text = exc.args[0]
        else:
            text = str(exc)
        text = text.strip() or type(exc).__name__
    else:
        text = str(exc).strip()
    text = re.sub(r"\s*\n\s*", "; ", text)
    text = re.sub(r"[ \t]+", " ", text)
    if len(text) > limit:
        text = text[: max(0, limit - 3)].rstrip() + "..."
    return text


def error_text(exc: BaseException | str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``"Type: message"`` on one line (a text is kept as it is): the ``error`` column of a failed row."""
    if isinstance(exc, BaseException):
        message = str(exc).strip()
        head = type(exc).__name__
        return one_line(f"{head}: {message}" if message else head, limit)
    return one_line(exc, limit)


#: Failure kinds of a key: transient ones are measured again by a plain rerun, permanent ones only with
#: ``--retry-failed``.
TRANSIENT = "transient"
PERMANENT = "permanent"

#: OS errors that say the machine, not the key, was the problem (disk full, too many open files, no memory).
TRANSIENT_ERRNOS = frozenset(
    getattr(errno, name)
    for name in ("ENOSPC", "EDQUOT", "EMFILE", "ENFILE", "ENOMEM", "EAGAIN", "EIO", "EBUSY")
    if hasattr(errno, name)
)

#: Pieces of an error's text that mark it transient when only the text is left (a row from a worker).
_TRANSIENT_TEXT = (
    "no space left on device",
    "disk quota exceeded",
    "too many open files",
    "cannot allocate memory",
    "out of memory",
    "outofmemoryerror",
    "memoryerror",
    "cudaerrormemoryallocation",
    "workerdied",
    "workerlost",
)


def failure_kind(error: BaseException | str) -> str:
    """:data:`TRANSIENT` when a failure says the machine was the problem (a full disk, too many open files,
    no memory, a dead worker), else :data:`PERMANENT` (the engine refused the graph, the key is invalid, ...)."""
    if isinstance(error, BaseException):
        if isinstance(error, MemoryError):
            return TRANSIENT
        if isinstance(error, OSError) and error.errno in TRANSIENT_ERRNOS:
            return TRANSIENT
        if "OutOfMemory" in type(error).__name__:
            return TRANSIENT
        text = error_text(error)
    else:
        text = str(error)
    low = text.lower()
    return TRANSIENT if any(piece in low for piece in _TRANSIENT_TEXT) else PERMANENT


__all__ = ["MAX_MESSAGE_CHARS", "PERMANENT", "TRANSIENT", "error_text", "failure_kind", "one_line"]
