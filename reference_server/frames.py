"""Server frames, encoded once: the bytes every recipient's socket gets.

A frame is built here once and the same ``bytes`` go to every recipient, the
room's ring and every later replay: no per-recipient encoding or framing.
"""

from __future__ import annotations

from typing import Any

from reference_server.store.base import KIND_MESSAGE, StoredItem
from reference_server.transport import text_frame
from rtbench.protocol import encode
from rtbench.protocol import messages as p


def framed(msg: Any) -> bytes:
    """Encode a server message and wrap it in its WebSocket frame, once for all recipients."""
    return text_frame(encode(msg))


def encode_item(item: StoredItem) -> bytes:
    """The live frame of a stored item (also what replay sends and the ring keeps)."""
    if item.kind == KIND_MESSAGE:
        return framed(
            p.Message(
                room=item.room,
                seq=item.seq,
                sender=item.sender,
                body=item.body or "",
                ts=item.ts,
                cid=item.cid,
                meta=item.meta,
            )
        )
    return framed(
        p.Event(
            room=item.room,
            event=item.event or "",
            data=item.data,
            sender=item.sender,
            ts=item.ts,
            seq=item.seq,
        )
    )
