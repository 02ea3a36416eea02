"""Cross-worker fan-out behind one interface (see ``base.Broker``); ``make_broker`` picks it."""

from __future__ import annotations

from reference_server.broker.base import Broker, BrokerError, LocalBroker, Sink

__all__ = ["Broker", "BrokerError", "LocalBroker", "Sink", "make_broker"]


def make_broker(url: str, prefix: str = "rtbench", lease_ms: int = 10000) -> Broker:
    """``""``: one process (``LocalBroker``); ``redis://...``: ``RedisBroker``."""
    if not url:
        return LocalBroker()
    from reference_server.cluster.redis_broker import RedisBroker  # redis only when used

    return RedisBroker(url, prefix, lease_ms)
