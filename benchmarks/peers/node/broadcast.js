// The server-side peer of the benchmark suite: a Node `ws` room broadcast server that
// speaks the minimal subset of the rtbench reference protocol (docs/PROTOCOL.md), so the
// same `rtbench run` drives it and the reference server alike:
//
//   hello   -> welcome                      publish -> ack + event to the room's others
//   join    -> joined (room seq)            send    -> ack (seq) + message to the others
//   leave   -> left                         ping    -> pong (same id and ts)
//
// No storage, no auth, no limits: it is what a plain `ws` broadcast costs, written the
// way the ws docs recommend (one JSON encoding per broadcast, the same Buffer to every
// recipient, no per-message compression). Prints "listening on ws://127.0.0.1:PORT/ws".
"use strict";

const { WebSocketServer } = require("ws");

const HEARTBEAT = { interval_ms: 2000, timeout_ms: 3000 };
const LIMITS = { max_frame_bytes: 65536, max_body_chars: 4096, max_rooms: 100, max_history: 0 };
const rooms = new Map(); // room -> { seq, subs: Set<ws> }
let sessions = 0;

const wss = new WebSocketServer({
  host: "127.0.0.1",
  port: Number(process.env.PORT || 0),
  path: "/ws",
  perMessageDeflate: false,
  clientTracking: false,
  maxPayload: LIMITS.max_frame_bytes,
});

function room(name) {
  let r = rooms.get(name);
  if (r === undefined) {
    r = { seq: 0, subs: new Set() };
    rooms.set(name, r);
  }
  return r;
}

function reply(ws, frame) {
  ws.send(JSON.stringify(frame));
}

function broadcast(r, sender, frame) {
  const data = Buffer.from(JSON.stringify(frame));
  for (const other of r.subs) {
    if (other !== sender) other.send(data, { binary: false });
  }
}

function error(ws, msg, code, message) {
  reply(ws, { type: "error", id: msg.id, code, message, ref: msg.type });
}

function handle(ws, msg) {
  const id = msg.id === undefined ? null : msg.id;
  if (ws.user === undefined && msg.type !== "hello") {
    return error(ws, msg, "hello_required", "say hello first");
  }
  switch (msg.type) {
    case "hello":
      ws.user = String(msg.token || "anonymous");
      return reply(ws, {
        type: "welcome",
        id,
        session: `node-${++sessions}`,
        user: ws.user,
        server: "rtbench-peer-node-ws",
        heartbeat: HEARTBEAT,
        limits: LIMITS,
      });
    case "join": {
      const r = room(msg.room);
      r.subs.add(ws);
      ws.rooms.add(msg.room);
      return reply(ws, { type: "joined", id, room: msg.room, seq: r.seq, members: r.subs.size });
    }
    case "leave": {
      const r = rooms.get(msg.room);
      if (r !== undefined) r.subs.delete(ws);
      ws.rooms.delete(msg.room);
      return reply(ws, { type: "left", id, room: msg.room });
    }
    case "send": {
      if (!ws.rooms.has(msg.room)) return error(ws, msg, "not_member", "join the room first");
      const r = rooms.get(msg.room);
      const seq = ++r.seq;
      const ts = Date.now();
      reply(ws, { type: "ack", id, cid: msg.cid, room: msg.room, seq, ts });
      return broadcast(r, ws, {
        type: "message",
        room: msg.room,
        seq,
        from: ws.user,
        body: msg.body,
        ts,
        cid: msg.cid,
      });
    }
    case "publish": {
      if (!ws.rooms.has(msg.room)) return error(ws, msg, "not_member", "join the room first");
      const ts = Date.now();
      reply(ws, { type: "ack", id, cid: msg.cid, room: msg.room, ts });
      return broadcast(rooms.get(msg.room), ws, {
        type: "event",
        room: msg.room,
        event: msg.event,
        data: msg.data,
        from: ws.user,
        ts,
      });
    }
    case "ping":
      return reply(ws, { type: "pong", id, ts: msg.ts });
    default:
      return error(ws, msg, "unknown_type", `unknown message type ${msg.type}`);
  }
}

wss.on("connection", (ws) => {
  ws.rooms = new Set();
  ws.on("message", (data, isBinary) => {
    if (isBinary) return ws.close(1003, "text frames only");
    let msg;
    try {
      msg = JSON.parse(data);
    } catch (e) {
      return reply(ws, { type: "error", code: "bad_json", message: "frame is not valid JSON" });
    }
    if (msg === null || typeof msg !== "object" || typeof msg.type !== "string") {
      return reply(ws, { type: "error", code: "bad_frame", message: "need an object with a type" });
    }
    handle(ws, msg);
  });
  ws.on("close", () => {
    for (const name of ws.rooms) {
      const r = rooms.get(name);
      if (r !== undefined) r.subs.delete(ws);
    }
  });
  ws.on("error", () => {});
});

wss.on("listening", () => {
  console.log(`listening on ws://127.0.0.1:${wss.address().port}/ws`);
});
process.on("SIGTERM", () => process.exit(0));
process.on("SIGINT", () => process.exit(0));
