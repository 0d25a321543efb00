"""The one-line text of an error: what a CLI prints and what a failed row stores.

Every command prints a mistake as one line on stderr, and a table stores a
failed key's error as one line in its ``error`` column; both come from here.
"""

from __future__ import annotations

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


__all__ = ["MAX_MESSAGE_CHARS", "error_text", "one_line"]
