"""The rtbench reference realtime server.

A transport-independent application core (``app`` wires its parts: connections,
dispatch, handlers/, access, commits, fanout, resume, presence, health) behind a
thin WebSocket transport seam (``transport``), started by ``server.run`` or
``rtbench serve``.
"""
