"""The Node ws peer speaks the reference protocol's minimal subset, frame for frame.

Its replies are decoded with ``rtbench.protocol``'s own server decoder, so a peer that
drifted from the spec would fail here before it skewed a benchmark.
"""

from __future__ import annotations

import msgspec
from websockets.sync.client import connect

from benchmarks.procs import Cores, NodePeer
from rtbench.protocol import decode_server, encode
from rtbench.protocol import messages as m


def _recv(ws) -> object:  # type: ignore[no-untyped-def]
    return decode_server(ws.recv(timeout=5))


def test_peer_subset(node: str) -> None:
    with NodePeer(Cores(None, None)) as peer, connect(peer.url) as alice, connect(peer.url) as bob:
        for ws, user in ((alice, "alice"), (bob, "bob")):
            ws.send(encode(m.Join(room="r", id=0)).decode())
            assert isinstance(error := _recv(ws), m.Error) and error.code == "hello_required"
            ws.send(encode(m.Hello(token=user, id=1)).decode())
            welcome = _recv(ws)
            assert isinstance(welcome, m.Welcome) and welcome.user == user and welcome.id == 1
            ws.send(encode(m.Join(room="r", id=2)).decode())
            joined = _recv(ws)
            assert isinstance(joined, m.Joined) and joined.room == "r" and joined.seq == 0

        for expected_seq in (1, 2):
            alice.send(encode(m.Send(room="r", cid=f"c{expected_seq}", body="hi", id=3)).decode())
            ack = _recv(alice)
            assert isinstance(ack, m.Ack) and ack.seq == expected_seq and ack.id == 3
            message = _recv(bob)
            assert isinstance(message, m.Message)
            assert (message.seq, message.sender, message.body) == (expected_seq, "alice", "hi")

        bob.send(encode(m.Publish(room="r", event="score", data="3-1", id=4)).decode())
        assert isinstance(ack := _recv(bob), m.Ack) and ack.seq is None
        event = _recv(alice)
        assert isinstance(event, m.Event) and (event.event, event.data) == ("score", "3-1")

        alice.send(encode(m.Ping(ts="t-1", id=5)).decode())
        pong = _recv(alice)
        assert isinstance(pong, m.Pong) and (pong.id, pong.ts) == (5, "t-1")

        alice.send("not json")
        assert msgspec.json.decode(alice.recv(timeout=5))["code"] == "bad_json"
        bob.send(encode(m.Send(room="elsewhere", cid="x", body="hi", id=6)).decode())
        assert isinstance(error := _recv(bob), m.Error) and error.code == "not_member"
