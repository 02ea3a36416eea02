"""The reference wire protocol: frames, codes and codec (normative text: docs/PROTOCOL.md).

``loadtest`` and ``monitor`` know the reference server only through this module.
"""

from rtbench.protocol.codec import FrameError, decode_client, decode_server, encode
from rtbench.protocol.codes import CloseCode, ErrorCode
from rtbench.protocol.messages import dm_room

WS_PATH = "/ws"
"""Path of the WebSocket endpoint on the reference server; /healthz and /metrics share the port."""

WS_PATHS = frozenset({WS_PATH, "/"})
"""Every path the server upgrades on: ``/ws``, and ``/`` so that a target typed with a
trailing slash (``ws://host:port/``) is the same endpoint, never a 404."""

ADMIN_DRAIN_PATH = "/admin/drain"
"""``GET /admin/drain?batch=N&interval_ms=MS`` on the reference server: close every client
open now with 1012 (reconnect and resume), N at a time, one batch every MS; the server
keeps running. Off unless the server has an admin token or runs ``--insecure-dev``;
with a token it needs ``Authorization: Bearer TOKEN`` (docs/PROTOCOL.md, Admin)."""

__all__ = [
    "ADMIN_DRAIN_PATH",
    "WS_PATH",
    "WS_PATHS",
    "CloseCode",
    "ErrorCode",
    "FrameError",
    "decode_client",
    "decode_server",
    "dm_room",
    "encode",
]
