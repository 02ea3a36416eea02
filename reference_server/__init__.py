"""The rtbench reference realtime server.

A transport-independent application core (``app``: sessions, rooms, fan-out,
store, presence, typing, heartbeats) behind a thin WebSocket transport seam
(``transport``), started by ``server.run`` or ``rtbench serve``.
"""
