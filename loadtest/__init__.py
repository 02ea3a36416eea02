"""Load scenarios for any realtime WebSocket server, and the native engine behind `rtbench run`.

Layers, from the wire up:

- ``loadtest.adapters``: sans-IO protocol adapters (frames out, typed events in);
- ``loadtest.session`` and ``loadtest.ledger``: sans-IO per-connection state (last seq per
  room for resume; delivery accounting per sender stream);
- ``loadtest.scenarios`` and ``loadtest.plan``: the engine-neutral scenario model and the
  topology derived from it (who joins which room, who sends where);
- ``loadtest.engine``: the asyncio/uvloop/picows engine, its worker processes and merging;
- ``loadtest.report``: verdicts and ``rtbench.results.Results`` from merged figures.

The adapters, session, ledger, scenarios and plan do no I/O, so the monitor (asyncio) and
the Locust users (gevent) reuse them unchanged.
"""
