"""The exceptions a user can cause, each rendered by the CLI as one line with exit status 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

# Past this a message is reprinting a value, not naming it.
_MAX_MESSAGE = 2000
# Close enough to be a slip of the keyboard, and few enough to read on one line.
_CLOSE_CUTOFF = 0.6
_CLOSE_MAX = 3


class BenchError(Exception):
    """A user-facing problem: bad input, a missing file, an unusable results folder."""


class SuiteError(BenchError):
    """A suite file (or an ad-hoc suite) that cannot be loaded or expanded.

    Carries the file, the field path and the offending value so the message can name them.
    """

    def __init__(self, message: str, *, file: str | None = None, field: str | None = None, value: object = None):
        self.file = file
        self.field = field
        self.value = value
        where = ": ".join(part for part in (file, field) if part)
        super().__init__(_one_line(f"{where}: {message}" if where else message))


class StoreError(BenchError):
    """The results store cannot be opened, read or written."""


class DataError(BenchError):
    """A dataset that is missing, empty, unreadable or too small for the sizes asked."""


class WeightsError(BenchError):
    """Weights that cannot be found, loaded or matched to the model."""


class ReportError(BenchError):
    """A report that cannot be rendered from what the store holds."""


def _one_line(text: str) -> str:
    """A message as one line of bounded length."""
    text = " ".join(text.splitlines())
    return text if len(text) <= _MAX_MESSAGE else f"{text[:_MAX_MESSAGE]}... ({len(text):,} characters)"


def shown(value: Any, limit: int = 60) -> str:
    """A value as it appears in a one-line message: its repr, cut short."""
    text = value if isinstance(value, str) else repr(value)
    text = text.replace("\n", "\\n")
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)``, or ``'x' or 'y'``, for the names in ``choices`` closest to ``word``; or nothing.

    Every unknown-name message in the package words its suggestion with this.
    """
    close = difflib.get_close_matches(str(word), list(choices), n=_CLOSE_MAX, cutoff=_CLOSE_CUTOFF)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
