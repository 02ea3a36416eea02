"""The shared reconnecting client: one library for the native engine, Locust and the monitor.

Sans-IO, like the adapters: ``policy`` says when to retry and when a silent connection
is dead; ``reconnect.ClientSession`` remembers what a client needs across connections
(unique request ids, the outbox of unacked sends, seqs to resume, recovery timings);
``setup.SessionSetup`` sequences one (re)connection's setup through it (hello, welcome,
rooms resumed or joined, backlog) and fails it with one public ``SetupError`` hierarchy.
Each driver owns its sockets and feeds these the events it sees. What a protocol's
codes mean (which close is final, which error refuses one room of a resume) is the
adapter's to say (``Adapter.fatal_close_codes``, ``Adapter.refused_room_codes``), never
this package's. docs/RECOVERY.md describes the behaviour and every setting.
"""

from loadtest.client.policy import (
    Backoff,
    Liveness,
    Pulse,
    ReconnectPolicy,
    waits_for_listener,
)
from loadtest.client.reconnect import ClientSession, Phase, Recovery
from loadtest.client.setup import (
    SessionSetup,
    SetupClosed,
    SetupError,
    SetupRejected,
    SetupTimeout,
    Step,
)

__all__ = [
    "Backoff",
    "ClientSession",
    "Liveness",
    "Phase",
    "Pulse",
    "ReconnectPolicy",
    "Recovery",
    "SessionSetup",
    "SetupClosed",
    "SetupError",
    "SetupRejected",
    "SetupTimeout",
    "Step",
    "waits_for_listener",
]
