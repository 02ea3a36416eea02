// A real GraphQL-over-WebSocket chat server for rtbench's adapter tests.
//
//   node server.mjs --port 0 [--legacy] [--app-ping-ms N] [--ka-ms N] [--token T]
//
// The schema is the graphql-ws README's getting-started server grown into a chat: a
// `sendMessage(room, body)` mutation publishes to a simple in-memory pubsub and a
// `messages(room)` subscription yields every message of its room (the sender's own
// subscription included, as a pubsub does). Without --legacy it speaks
// graphql-transport-ws (the graphql-ws library, `useServer` on ws); with --legacy the
// older subscriptions-transport-ws protocol (subprotocol name `graphql-ws`).
//
// --app-ping-ms: the server sends a protocol-level `{"type":"ping"}` that often and
//   closes (4499) a client that did not answer the previous one with `pong` (the
//   graphql-ws recipe for server-side keep-alive): what an adapter's pong prevents.
// --ka-ms: the legacy server's `ka` keep-alive interval (subscriptions-transport-ws).
// --token: connection_init must carry {"token": T}, else the server refuses it.
//
// GET /stats returns {sends, deliveries, subscriptions, closes_by_code}. The first stdout
// line is `listening on 127.0.0.1:PORT`; SIGTERM stops it.

import http from "node:http";
import { parseArgs } from "node:util";

import { buildSchema, execute, subscribe } from "graphql";
import { useServer } from "graphql-ws/use/ws";
import { SubscriptionServer } from "subscriptions-transport-ws";
import { WebSocketServer } from "ws";

const { values: args } = parseArgs({
  options: {
    port: { type: "string", default: "0" },
    legacy: { type: "boolean", default: false },
    "app-ping-ms": { type: "string", default: "0" },
    "ka-ms": { type: "string", default: "0" },
    token: { type: "string", default: "" },
  },
});

const stats = { sends: 0, deliveries: 0, subscriptions: 0, closes_by_code: {} };

// -- a simple pubsub: room -> set of push functions ---------------------------------------

const rooms = new Map();

function listen(room) {
  // An async iterator registered at once (not at its first next()), so a subscription
  // is live as soon as the server has processed the subscribe message.
  const queue = [];
  let waiting = null;
  const push = (message) => {
    if (waiting) {
      const resolve = waiting;
      waiting = null;
      resolve({ value: { messages: message }, done: false });
    } else {
      queue.push(message);
    }
  };
  if (!rooms.has(room)) rooms.set(room, new Set());
  rooms.get(room).add(push);
  stats.subscriptions += 1;
  const stop = () => {
    const members = rooms.get(room);
    if (members) {
      members.delete(push);
      if (members.size === 0) rooms.delete(room);
    }
    if (waiting) waiting({ value: undefined, done: true });
    waiting = null;
  };
  return {
    next() {
      if (queue.length) return Promise.resolve({ value: { messages: queue.shift() }, done: false });
      return new Promise((resolve) => {
        waiting = resolve;
      });
    },
    return() {
      stop();
      return Promise.resolve({ value: undefined, done: true });
    },
    throw(error) {
      stop();
      return Promise.reject(error);
    },
    [Symbol.asyncIterator]() {
      return this;
    },
  };
}

function publish(message) {
  stats.sends += 1;
  const members = rooms.get(message.room);
  if (!members) return;
  for (const push of members) {
    stats.deliveries += 1;
    push(message);
  }
}

// -- the schema -----------------------------------------------------------------------------

const schema = buildSchema(`
  type Message {
    room: String!
    body: String!
  }
  type Query {
    hello: String
  }
  type Mutation {
    sendMessage(room: String!, body: String!): Message!
  }
  type Subscription {
    messages(room: String!): Message!
  }
`);

const roots = {
  query: { hello: () => "world" },
  mutation: {
    sendMessage: ({ room, body }) => {
      const message = { room, body };
      publish(message);
      return message;
    },
  },
  subscription: {
    messages: ({ room }) => listen(room),
  },
};

// -- the servers ----------------------------------------------------------------------------

const httpServer = http.createServer((req, res) => {
  if (req.url === "/stats") {
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify(stats));
    return;
  }
  res.writeHead(404);
  res.end();
});

const authorised = (payload) => !args.token || (payload && payload.token === args.token);
const pingMs = Number(args["app-ping-ms"]);

if (args.legacy) {
  SubscriptionServer.create(
    {
      schema,
      execute,
      subscribe,
      // one root for every operation type: this library takes no per-type roots
      rootValue: { ...roots.query, ...roots.mutation, ...roots.subscription },
      keepAlive: Number(args["ka-ms"]) || undefined,
      onConnect: (payload) => {
        if (!authorised(payload)) throw new Error("bad token");
        return true;
      },
    },
    { server: httpServer, path: "/graphql" },
  );
} else {
  const wss = new WebSocketServer({ server: httpServer, path: "/graphql" });
  useServer(
    {
      schema,
      roots,
      onConnect: (ctx) => authorised(ctx.connectionParams),
    },
    wss,
  );
  wss.on("connection", (socket) => {
    let answered = true;
    socket.on("message", (data) => {
      // a second listener beside useServer's: it only watches for the client's pong
      if (data.length < 64 && String(data).includes('"pong"')) answered = true;
    });
    socket.on("close", (code) => {
      stats.closes_by_code[code] = (stats.closes_by_code[code] || 0) + 1;
    });
    if (pingMs > 0) {
      const timer = setInterval(() => {
        if (!answered) {
          socket.close(4499, "no pong");
          return;
        }
        answered = false;
        socket.send('{"type":"ping"}');
      }, pingMs);
      socket.on("close", () => clearInterval(timer));
    }
  });
}

httpServer.listen(Number(args.port), "127.0.0.1", () => {
  process.stdout.write(`listening on 127.0.0.1:${httpServer.address().port}\n`);
});
process.on("SIGTERM", () => process.exit(0));
