"""The native engine's failure causes: picows's own exceptions, then the shared rules.

The cause names and their sentences are every driver's (``loadtest.run.failures``);
only what picows raises is known here.
"""

from __future__ import annotations

from picows import WSError, WSHandshakeError

from loadtest.run import failures


def classify(exc: BaseException, secure: bool = False) -> str:
    """A stable cause name for an exception raised while opening a picows connection."""
    if isinstance(exc, WSHandshakeError):
        response = getattr(exc, "response", None)
        status = getattr(response, "status", None)
        if status is not None:
            return f"http_{int(status)}"
        return "handshake"
    if isinstance(exc, WSError):  # neither an OSError nor a timeout: no overlap below
        return "handshake"
    return failures.classify(exc, secure=secure)
