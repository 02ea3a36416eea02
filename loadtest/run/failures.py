"""Why a connection failed or ended, as a short stable cause with a sentence for people.

Counts by cause go to results.json (``totals.failures_by_cause``); the sentences make
the one-line errors of an unreachable target, a refused handshake or a TLS failure.
Every driver names causes the same way: its own socket library's exceptions first
(picows in the native engine, websocket-client under Locust, websockets in the
monitor), then ``classify`` here for what the operating system and ``ssl`` raise.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl

DESCRIPTIONS = {
    "refused": "connection refused (nothing listens there)",
    "timeout": "timed out (no answer to connect, upgrade, hello or join in time)",
    "dns": "the host name does not resolve",
    "tls": "TLS handshake failed",
    "reset": "connection reset by the server",
    "handshake": "the WebSocket upgrade failed",
    "no_ports": "out of local ports (spread over more source addresses or fewer connections)",
    "fd_limit": "out of file descriptors in the generator (use more --procs)",
    "unreachable": "network unreachable",
    "closed": "closed by the server before the session was ready",
}


def classify(exc: BaseException, secure: bool = False) -> str:
    """A stable cause name for an exception raised while opening a connection.

    On a ``wss://`` URL a reset before the upgrade is the TLS handshake failing (uvloop
    reports a plain-HTTP peer hanging up on the ClientHello as a connection reset).
    """
    cause = _classify(exc)
    if secure and cause == "reset":
        return "tls"
    return cause


def _classify(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return "timeout"
    if isinstance(exc, ssl.SSLError | ssl.CertificateError):
        return "tls"
    if isinstance(exc, socket.gaierror):
        return "dns"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, ConnectionResetError | BrokenPipeError):
        return "reset"
    if isinstance(exc, OSError):
        if exc.errno == errno.EADDRNOTAVAIL:
            return "no_ports"
        if exc.errno in (errno.EMFILE, errno.ENFILE):
            return "fd_limit"
        if exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
            return "unreachable"
        if exc.errno == errno.ETIMEDOUT:
            return "timeout"
        if exc.errno == errno.ECONNREFUSED:
            return "refused"
        name = errno.errorcode.get(exc.errno or 0, "oserror")
        return f"os_{name.lower()}"
    return f"error_{type(exc).__name__}"


def describe(cause: str) -> str:
    """A sentence for a cause name (``http_403`` -> 'the upgrade was refused with HTTP 403')."""
    if cause in DESCRIPTIONS:
        return DESCRIPTIONS[cause]
    if cause.startswith("http_"):
        return f"the WebSocket upgrade was refused with HTTP {cause[5:]}"
    if cause.startswith("closed_"):
        return f"the server closed the connection with code {cause[7:]} before it was ready"
    if cause.startswith("rejected_"):
        return f"the server answered the hello or join with error {cause[9:]!r}"
    return cause.replace("_", " ")
