"""Exceptions lenszoo raises for user errors.

The CLI prints a ``LenszooError`` as one line, without a traceback.
"""

import difflib


class LenszooError(Exception):
    """A user-facing error: the message says what is wrong and what to do."""


class UnknownNameError(LenszooError, KeyError):
    """A name (architecture, dataset, task, ...) that is not registered."""

    def __init__(self, kind, name, known, hint=""):
        self.kind, self.name = kind, name
        close = difflib.get_close_matches(str(name), list(known), n=3, cutoff=0.5)
        msg = f"unknown {kind} {name!r}"
        if close:
            msg += "; did you mean " + " or ".join(repr(c) for c in close) + "?"
        elif known:
            msg += "; known: " + ", ".join(sorted(known))
        if hint:
            msg += f" ({hint})"
        super().__init__(msg)

    def __str__(self):  # KeyError would otherwise quote the message
        return self.args[0]


class PluginError(LenszooError):
    """Plugins that conflict with each other."""


class DamagedCheckpoint(LenszooError):
    """A checkpoint file that cannot be what was written: an unreadable or invalid config.json.
    A copy fetched from the Hub that raises this is fetched once more, fresh."""


class ChecksumMismatch(DamagedCheckpoint):
    """A weights file whose sha256 is not the one recorded for it."""


TRACEBACK_ENV = "LENSZOO_TRACEBACK"  # set to 1 to see the traceback, and library warnings, behind an error


def debugging() -> bool:
    """Whether the user asked to see everything (tracebacks, library warnings)."""
    import os

    return bool(os.environ.get(TRACEBACK_ENV))
