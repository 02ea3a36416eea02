"""The native engine: asyncio on uvloop with picows clients, in worker processes.

``coordinator.run_load`` runs a resolved scenario and returns a merged ``Outcome``;
``worker`` is the process that holds the sockets; ``wire`` is what they say to each
other; ``clock`` gives sub-millisecond send times; ``failures`` names why a
connection failed. See docs/LOADTEST.md.
"""
