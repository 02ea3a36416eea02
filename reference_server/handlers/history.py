"""history: a page of a room's stored items, before or after a seq.

Pages inside the room's ring are decoded from the frames already in memory;
older ones are read from the store. Limits are clamped to ``max_history``.
"""

from __future__ import annotations

import msgspec

from reference_server.access import Access
from reference_server.config import LimitsConfig
from reference_server.dispatch import Routes
from reference_server.errors import Refuse
from reference_server.fanout import Fanout
from reference_server.history import BadRange, page_bounds
from reference_server.session import Session
from reference_server.store.base import KIND_MESSAGE, Store, StoredItem
from reference_server.transport import frame_payload
from rtbench.protocol import ErrorCode
from rtbench.protocol import messages as p

_frame_decoder = msgspec.json.Decoder(p.Message | p.Event)


def history_item(item: StoredItem) -> p.HistoryItem:
    """A stored item as a history entry."""
    if item.kind == KIND_MESSAGE:
        return p.HistoryItem(
            seq=item.seq,
            sender=item.sender,
            ts=item.ts,
            body=item.body,
            cid=item.cid,
            meta=item.meta,
        )
    return p.HistoryItem(
        seq=item.seq, sender=item.sender, ts=item.ts, kind="event", event=item.event, data=item.data
    )


def history_item_from_frame(frame: bytes) -> p.HistoryItem:
    """A ring frame (``frames.encode_item``) as a history entry, without a store read."""
    msg = _frame_decoder.decode(frame_payload(frame))
    if isinstance(msg, p.Message):
        return p.HistoryItem(
            seq=msg.seq, sender=msg.sender, ts=msg.ts, body=msg.body, cid=msg.cid, meta=msg.meta
        )
    return p.HistoryItem(
        seq=msg.seq or 0, sender=msg.sender, ts=msg.ts, kind="event", event=msg.event, data=msg.data
    )


class HistoryPages:
    """Serves history pages from the ring or the store."""

    def __init__(self, store: Store, access: Access, fanout: Fanout, limits: LimitsConfig) -> None:
        self.store = store
        self.access = access
        self.fanout = fanout
        self.max_history = limits.max_history

    def routes(self) -> Routes:
        return {p.History: self.on_history}

    async def on_history(self, s: Session, m: p.History) -> None:
        room = await self.access.readable(s, m.room)
        limit = min(m.limit, self.max_history)
        try:
            page = page_bounds(room.seq, limit, m.before, m.after)
        except BadRange as exc:
            raise Refuse(ErrorCode.BAD_RANGE, str(exc)) from None
        if page.first > page.last:
            items: list[p.HistoryItem] = []
        elif page.first >= room.ring_first:
            items = [history_item_from_frame(f) for f in room.frames(page.first, page.last)]
        else:
            stored = await self.store.load_items(room.name, page.first - 1, page.last)
            items = [history_item(item) for item in stored]
        self.fanout.reply(
            s, p.HistoryPage(id=m.id, room=room.name, messages=items, has_more=page.has_more)
        )
