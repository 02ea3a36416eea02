// A bare WebSocket echo server on Node `ws`: no application logic, so the server is never
// the limit when the load generator's own efficiency is measured. Prints its address.
const { WebSocketServer } = require("ws");

const wss = new WebSocketServer({
  host: "127.0.0.1",
  port: Number(process.env.PORT || 0),
  perMessageDeflate: false,
  clientTracking: false,
});
wss.on("listening", () => {
  console.log(`listening on ws://127.0.0.1:${wss.address().port}/ws`);
});
wss.on("connection", (ws) => {
  ws.on("message", (data, isBinary) => ws.send(data, { binary: isBinary }));
});
process.on("SIGTERM", () => process.exit(0));
