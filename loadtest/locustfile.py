"""Realtime WebSocket load for Locust: ``locust -f loadtest/locustfile.py``.

The same scenarios, adapters and SLO file as ``rtbench run`` (docs/LOCUST.md):

    rtbench serve --port 8765 --insecure-dev &
    locust -f loadtest/locustfile.py -H ws://127.0.0.1:8765 --scenario chat -u 200 --rate 1
    locust -f loadtest/locustfile.py -H ws://127.0.0.1:8765 --headless --scenario fanout \\
        -u 1000 --duration 30 --slo slo.toml      # exit code: the SLO verdicts

The web UI has a "Realtime SLO" tab; ``--processes N``, ``--master`` and ``--worker``
spread the users over Locust processes and machines.
"""

from loadtest.locust.shape import RealtimeShape
from loadtest.locust.users import (
    BroadcastPublisher,
    ChatUser,
    ConnectionHolder,
    DirectMessageUser,
    FanoutSubscriber,
    RoundTripUser,
)

__all__ = [
    "BroadcastPublisher",
    "ChatUser",
    "ConnectionHolder",
    "DirectMessageUser",
    "FanoutSubscriber",
    "RealtimeShape",
    "RoundTripUser",
]
