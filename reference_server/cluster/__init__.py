"""Running the reference server as many workers, on one machine or several.

``redis_broker`` carries what one worker tells the others over one Redis
pub/sub channel (committed items, non-stored room frames, presence, membership)
and keeps cluster-wide presence in Redis; ``envelope`` is its wire format;
``link`` applies what arrives to this worker's rooms and sessions;
``sequencer`` puts every room's items in seq order whichever worker committed
them, repairing gaps from the shared store; ``stats`` aggregates /metrics and
/healthz over the workers of one machine. The supervisor is ``workers``.
"""
