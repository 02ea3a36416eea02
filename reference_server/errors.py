"""The one way a request handler says no.

A handler raises ``Refuse`` from anywhere below it (an access check, a limit, the
store being behind); the dispatcher turns it into an ``error`` frame with a stable
code that answers the request, and the connection stays open.
"""

from __future__ import annotations

from rtbench.protocol import ErrorCode


class Refuse(Exception):
    """A request that cannot be carried out; becomes an ``error`` frame."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
