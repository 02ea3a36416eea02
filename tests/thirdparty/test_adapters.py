"""The Socket.IO and generic adapters without a socket: framing, templates, paths, errors."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path

import pytest

from loadtest.adapters import (
    Ack,
    AdapterError,
    Delivery,
    EchoAdapter,
    Feature,
    GenericAdapter,
    Notice,
    Ready,
    ReferenceAdapter,
    Rejected,
    Reply,
    SocketIOAdapter,
    make_adapter,
    marker,
)
from loadtest.adapters import engineio as eio
from loadtest.adapters.rules import find_marker
from loadtest.engine.coordinator import run_load
from loadtest.scenarios import Kind, Scenario, ScenarioError
from tests.thirdparty.conftest import GENERIC_OPTIONS

# -- Engine.IO / Socket.IO framing ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "packet"),
    [
        (b'42["chat message",{"a":1}]', eio.Packet(2, "/", None, b'["chat message",{"a":1}]')),
        (b"43/chat,17[]", eio.Packet(3, "/chat", 17, b"[]")),
        (b'40{"sid":"x"}', eio.Packet(0, "/", None, b'{"sid":"x"}')),
        (b"41/admin,", eio.Packet(1, "/admin", None, b"")),
        (b"41/admin", eio.Packet(1, "/admin", None, b"")),
        (b'451-/nsp,9["up",{"_placeholder":true,"num":0}]', None),
    ],
)
def test_socketio_packets_decode(frame: bytes, packet: eio.Packet | None) -> None:
    decoded = eio.decode(frame)
    if packet is None:  # binary event: type, namespace and id, attachments not decoded
        assert decoded is not None and (decoded.type, decoded.namespace, decoded.id) == (
            eio.BINARY_EVENT,
            "/nsp",
            9,
        )
    else:
        assert decoded == packet
    assert eio.decode(b"2") is None and eio.decode(b"4x") is None


def test_socketio_packets_encode_round_trip() -> None:
    for ns, ack in (("/", None), ("/chat", 5), ("/", 123456789012)):
        frame = eio.encode(eio.EVENT, ns, ack, b'["e"]')
        assert eio.decode(frame) == eio.Packet(eio.EVENT, ns, ack, b'["e"]')
    assert eio.encode(eio.CONNECT) == b"40"
    assert eio.pong(b"2") == b"3" and eio.pong(b"2probe") == b"3probe"


def test_socketio_defaults_follow_the_chat_example() -> None:
    a = SocketIOAdapter()
    assert a.features == {Feature.ROOMS, Feature.PUBLISH}
    assert a.expects_welcome and not a.confirms_join
    assert a.url("ws://h:3000") == "ws://h:3000/socket.io/?EIO=4&transport=websocket"
    assert a.url("wss://h/app/sio/?x=1") == "wss://h/app/sio/?x=1&EIO=4&transport=websocket"
    # Socket.IO users name servers with http(s)://, mapped as io("http://...") maps them
    assert a.url("http://h:3000") == "ws://h:3000/socket.io/?EIO=4&transport=websocket"
    assert a.url("HTTPS://h/") == "wss://h/socket.io/?EIO=4&transport=websocket"
    assert a.open("alice", None) == [b"40"]
    assert a.join("r1", 3) == b'42["join","r1"]'
    frame = a.send("r1", marker(4, 1, 9, 77, 80), 5)
    assert frame.startswith(b'42["chat message",{"room":"r1","body":"rtb1.4.1.9.77 x')
    assert a.parse(frame) == Delivery(4, 1, 9, 77, room="r1")
    assert a.parse(b"2") == Reply(b"3")
    assert a.parse(b'0{"sid":"s","pingInterval":25000}') is None
    assert a.parse(b'40{"sid":"s"}') == Ready(None, 0)
    assert a.parse(b'44{"message":"bad token"}') == Rejected(None, "connect_error", "bad token")
    assert a.parse(b'42["user joined","bob"]') == Notice("user joined")
    assert a.parse(b'42/other,["chat message",{}]') == Notice("other_namespace")
    assert a.parse(b"41") == Notice("disconnect")


def test_socketio_options_namespace_auth_acks_and_ping() -> None:
    a = SocketIOAdapter(
        {
            "namespace": "/chat",
            "auth": {"token": "{token}", "who": "{user}"},
            "join_ack": True,
            "ack": True,
            "send": {"event": "msg", "args": ["{room}", {"text": "{body}", "n": "{counter}"}]},
            "ping": {"event": "ping"},
        }
    )
    assert a.features == {Feature.ROOMS, Feature.PUBLISH, Feature.ACK, Feature.PING}
    assert a.open("alice", "tok") == [b'40/chat,{"token":"tok","who":"alice"}']
    join = eio.decode(a.join("lobby", 1))
    assert join is not None and join.namespace == "/chat" and join.id is not None
    # the join's ack names the room although an ack carries only its id
    assert a.parse(f"43/chat,{join.id}[]".encode()) == Ready("lobby", 0)
    send = a.send("lobby", marker(1, 0, 2, 3), 7)
    assert send.startswith(b'42/chat,7["msg","lobby",{"text":"rtb1.1.0.2.3 ","n":2}]')
    # the default delivery rule follows the send emit: same event, same place
    assert a.parse(send.replace(b",7[", b",[")) == Delivery(1, 0, 2, 3, room="lobby")
    assert a.parse(b"43/chat,7[]") == Ack(7)
    ping = eio.decode(a.ping(marker(1, -1, 4, 5), 9))
    assert ping is not None and ping.id is not None
    reply = f'43/chat,{ping.id}["{marker(1, -1, 4, 5)}"]'.encode()
    assert a.parse(reply) == Delivery(1, -1, 4, 5)


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"send": {"args": ["{room}"]}}, "args carry no {body}"),
        ({"send": {"args": [{"t": "{bdy}"}]}}, "unknown placeholder {bdy}"),
        (
            {"join": {"args": ["{body}"]}},
            "protocol_options.join.args.0: unknown placeholder {body}",
        ),
        ({"namespace": "chat"}, "must start with /"),
        ({"dm": {"args": ["{to}"]}}, "protocol_options.dm: needs event"),
        ({"acks": True}, "unknown field `acks`"),
        ({"delivery": {"match": {"event": "m"}}}, "needs marker"),
    ],
)
def test_socketio_bad_options_are_one_line(options: dict, error: str) -> None:
    with pytest.raises(AdapterError, match=re.escape(error)) as exc:
        SocketIOAdapter(options)
    assert "\n" not in str(exc.value)


# -- the generic adapter -------------------------------------------------------------------------


def test_generic_templates_render_typed_values_and_text() -> None:
    a = GenericAdapter(
        {
            "hello": [{"op": "login", "user": "{user}", "auth": "Bearer {token}"}],
            "headers": {"X-User": "{user}"},
            "welcome": {"match": {"op": "hi"}},
            "join": {"op": "sub", "topic": "room:{room}", "ref": "{req}"},
            "send": {
                "op": "pub",
                "topic": "room:{room}",
                "meta": {"s": "{sender}", "n": "{counter}", "t": "{ts}", "k": "{stream}"},
                "text": "{{literal}} {body}",
                "n": 1.5,
                "flag": True,
                "none": None,
            },
            "delivery": {
                "match": {"op": "msg"},
                "sender": "meta.s",
                "counter": "meta.n",
                "timestamp": "meta.t",
                "stream": "meta.k",
                "room": "topic",
            },
        }
    )
    assert a.expects_welcome and not a.confirms_join
    assert a.features == {Feature.ROOMS, Feature.PUBLISH}
    assert a.headers("bob", None) == {"X-User": "bob"}
    assert a.open("bob", "t0k") == [b'{"op":"login","user":"bob","auth":"Bearer t0k"}']
    assert a.join("r", 4) == b'{"op":"sub","topic":"room:r","ref":4}'
    sent = a.send("r", marker(3, 2, 7, 1000, 70), 8)
    assert sent.startswith(
        b'{"op":"pub","topic":"room:r","meta":{"s":3,"n":7,"t":1000,"k":2},'
        b'"text":"{literal} rtb1.3.2.7.1000 x'
    )
    assert sent.endswith(b'"n":1.5,"flag":true,"none":null}')
    # the server relays the fields, as numbers or as strings
    relayed = b'{"op":"msg","topic":"room:r","meta":{"s":"3","n":7.0,"t":1000,"k":2}}'
    assert a.parse(relayed) == Delivery(3, 2, 7, 1000, room="room:r")
    assert a.parse(b'{"op":"hi"}') == Ready(None, 0)
    assert a.parse(b'{"op":"msg","meta":{"s":"x"}}') == Notice("other")
    assert a.parse(b"not json") == Notice("unparsed")


def test_generic_json_server_options_recognise_every_frame() -> None:
    a = GenericAdapter(GENERIC_OPTIONS)
    assert a.features == {Feature.ROOMS, Feature.PUBLISH, Feature.PING, Feature.ACK}
    assert a.confirms_join and not a.expects_welcome
    assert a.parse(b'{"event":"subscribed","channel":"c1","ref":1}') == Ready("c1", 0)
    text = marker(1, 0, 5, 9)
    assert a.parse(
        b'{"event":"message","channel":"c1","data":{"text":"' + text.encode() + b'"}}'
    ) == Delivery(1, 0, 5, 9, room="c1")
    assert a.parse(b'{"event":"echo","data":{"text":"' + text.encode() + b'"}}') == Delivery(
        1, 0, 5, 9
    )
    assert a.parse(b'{"event":"ok","ref":"12"}') == Ack(12)
    assert a.parse(b'{"event":"error","ref":3,"code":"not_subscribed","reason":"no"}') == Rejected(
        3, "not_subscribed", "no"
    )
    assert a.parse(b'{"event":"presence","user":"x"}') == Notice("presence")


def test_generic_join_confirmed_by_id_names_the_room() -> None:
    a = GenericAdapter(
        {
            "join": {"t": "join", "room": "{room}", "id": "{req}"},
            "joined": {"match": {"t": "ok"}, "id": "id"},
            "send": {"t": "say", "room": "{room}", "body": "{body}"},
            "delivery": {"match": {"t": "said"}, "marker": "body"},
            "reply": {"match": {"t": "ping"}, "send": {"t": "pong"}},
        }
    )
    # two connections' joins (same per-connection request id) stay apart
    first = a.join("r1", 1)
    second = a.join("r2", 1)
    id1, id2 = (int(f.split(b'"id":')[1].rstrip(b"}")) for f in (first, second))
    assert id1 != id2
    assert a.parse(b'{"t":"ok","id":%d}' % id2) == Ready("r2", 0)
    assert a.parse(b'{"t":"ok","id":%d}' % id1) == Ready("r1", 0)
    assert a.parse(b'{"t":"ok","id":%d}' % id1) == Notice("other")  # confirmed once only
    assert a.parse(b'{"t":"ping"}') == Reply(b'{"t":"pong"}')
    # a marker a server decorated ("alice: <marker>") is still found
    said = b'{"t":"said","body":"alice: ' + marker(2, 0, 1, 5).encode() + b'"}'
    assert a.parse(said) == Delivery(2, 0, 1, 5)
    assert find_marker("no marker here") is None and find_marker(None) is None


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"send": {"text": "{bdy}"}}, "protocol_options.send.text: unknown placeholder {bdy}"),
        ({"send": {"text": "{body"}}, "is not a valid template"),
        ({"send": {"text": "{body.x}"}}, "is not a placeholder"),
        ({"send": {"text": "{counter:zz}"}}, "is not a valid template"),
        ({"join": {"room": "{body}"}}, "protocol_options.join.room: unknown placeholder {body}"),
        ({"delivery": {"marker": "data..text"}}, "is not a field path"),
        ({"delivery": {"marker": "x", "sender": "s"}}, "not both"),
        ({"delivery": {"sender": "s", "counter": "n"}}, "missing: timestamp"),
        ({"joined": {"match": {"event": "subscribed"}}}, "needs room"),
        ({"ack": {"match": {}}}, "missing required field `id`"),
        ({"hello": [{"u": "{room}"}]}, "protocol_options.hello.0.u: unknown placeholder {room}"),
        ({"delivery": [], "ping": None}, "needs join + send + delivery"),
        ({"jion": {}}, "unknown field `jion`"),
    ],
)
def test_generic_bad_template_or_path_is_one_line(change: dict, error: str) -> None:
    options = {**GENERIC_OPTIONS, **change}
    with pytest.raises(AdapterError, match=re.escape(error)) as exc:
        GenericAdapter(options)
    assert "\n" not in str(exc.value)


def test_generic_dm_needs_a_stream_without_a_marker() -> None:
    options = {
        "join": {"j": "{room}"},
        "send": {"s": "{room}", "n": "{counter}", "f": "{sender}", "t": "{ts}"},
        "dm": {"to": "{to}", "n": "{counter}", "f": "{sender}", "t": "{ts}"},
        "delivery": {"sender": "f", "counter": "n", "timestamp": "t"},
    }
    with pytest.raises(AdapterError, match="needs a stream path"):
        GenericAdapter(options)
    ok = GenericAdapter({**options, "delivery": {**options["delivery"], "stream": "k"}})
    assert Feature.DM in ok.features


# -- the scenario side ---------------------------------------------------------------------------


def test_chat_defaults_drop_what_the_protocol_lacks_but_keep_what_was_asked() -> None:
    sio = Scenario(scenario=Kind.CHAT, protocol="socketio").resolved()
    assert (sio.dm_share, sio.typing_share, sio.receipt_share) == (0.0, 0.0, 0.0)
    ref = Scenario(scenario=Kind.CHAT).resolved()
    assert ref.dm_share and ref.typing_share and ref.receipt_share
    asked = Scenario(
        scenario=Kind.CHAT, protocol="socketio", dm_share=0.5, target="ws://127.0.0.1:1"
    ).resolved()
    assert asked.dm_share == 0.5
    # ... which the run then refuses before opening anything, naming what is missing
    with pytest.raises(ScenarioError, match="protocol 'socketio' lacks dm"):
        asyncio.run(run_load(asked))
    with pytest.raises(ScenarioError, match="unknown placeholder"):
        Scenario(
            scenario=Kind.CHAT, protocol="generic", protocol_options={"send": {"x": "{nope}"}}
        ).resolved()


def test_scenario_file_with_protocol_options_and_secrets_masked(tmp_path: Path) -> None:
    from loadtest.scenarios import load_scenario_file

    path = tmp_path / "sio.toml"
    path.write_text(
        'scenario = "chat"\nprotocol = "socketio"\n'
        '[protocol_options]\nnamespace = "/chat"\nauth = { token = "s3cret" }\n'
        '[protocol_options.send]\nevent = "message"\n'
    )
    sc = load_scenario_file(path).resolved()
    adapter = make_adapter(sc.protocol, sc.protocol_options)
    assert adapter.namespace == "/chat"  # type: ignore[attr-defined]
    assert adapter.send("r", marker(1, 0, 1, 1), 1).startswith(b'42/chat,["message",')
    described = sc.describe()
    assert described["protocol_options"]["auth"] == "***"
    assert sc.protocol_options["auth"] == {"token": "s3cret"}  # the run itself keeps it


def test_each_protocol_says_which_target_schemes_work() -> None:
    """One check for run, locust, check and monitor: the adapter lists its schemes."""
    assert SocketIOAdapter.target_problem("http://127.0.0.1:3000") is None
    assert SocketIOAdapter.target_problem("wss://chat.example/socket.io/") is None
    assert SocketIOAdapter.target_problem("ftp://h:1") == (
        "target 'ftp://h:1' must be a ws://, wss://, http:// or https:// URL with a host "
        "(protocol socketio)"
    )
    for cls in (ReferenceAdapter, EchoAdapter, GenericAdapter):
        assert cls.target_problem("ws://127.0.0.1:8765/") is None
        assert cls.target_problem("http://127.0.0.1:8765") == (
            f"target 'http://127.0.0.1:8765' must be a ws:// or wss:// URL with a host "
            f"(protocol {cls.name})"
        )
        assert "with a host" in (cls.target_problem("ws:///ws") or "")


_LAZY_PROBE = """
import sys
import rtbench.cli
from loadtest.adapters import ADAPTERS, ReferenceAdapter, adapter_class

def loaded():
    return sorted(m for m in sys.modules if m.startswith("loadtest.adapters."))

assert loaded() == ["loadtest.adapters.base", "loadtest.adapters.reference"], loaded()
assert "socketio" in ADAPTERS and len(sorted(ADAPTERS)) == 14, sorted(ADAPTERS)
assert loaded() == ["loadtest.adapters.base", "loadtest.adapters.reference"], loaded()
assert adapter_class("reference") is ReferenceAdapter
cls = adapter_class("nats")
assert cls.name == "nats" and "loadtest.adapters.nats" in loaded(), loaded()
assert "loadtest.adapters.socketio" not in loaded(), loaded()
assert all(ADAPTERS[name].name == name for name in ADAPTERS)  # every entry resolves
"""


def test_an_adapter_module_is_imported_only_when_its_protocol_is_asked_for() -> None:
    """``rtbench --help`` and every command import the scenario model, and with it the
    adapters package: naming the protocols must not import fourteen modules."""
    done = subprocess.run(
        [sys.executable, "-c", _LAZY_PROBE], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
