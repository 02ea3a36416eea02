"""The shared reconnecting client: one library for the native engine, Locust and the monitor.

Sans-IO, like the adapters: ``policy`` says when to retry and when a silent connection
is dead; ``reconnect.ClientSession`` remembers what a client needs across connections
(unique request ids, the outbox of unacked sends, seqs to resume, recovery timings).
Each driver owns its sockets and feeds these the events it sees. docs/RECOVERY.md
describes the behaviour and every setting.
"""

from loadtest.client.policy import (
    FATAL_CLOSE_CODES,
    Backoff,
    Liveness,
    Pulse,
    ReconnectPolicy,
)
from loadtest.client.reconnect import ClientSession, Phase, Recovery

__all__ = [
    "FATAL_CLOSE_CODES",
    "Backoff",
    "ClientSession",
    "Liveness",
    "Phase",
    "Pulse",
    "ReconnectPolicy",
    "Recovery",
]
