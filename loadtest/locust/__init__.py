"""Locust users for realtime WebSocket load, on the same scenarios and adapters as ``rtbench run``.

``locust -f loadtest/locustfile.py`` (or ``rtbench locust``) runs them: users in rooms,
direct messages, fan-out subscribers and broadcast publishers, round trips and held
connections, each one connection of the native engine's plan. Locust gives the web
UI, its statistics and its master/worker distribution; rtbench gives the scenario, the
exact delivery accounting, the Realtime SLO tab and verdict-based exit codes.
See docs/LOCUST.md.

Modules: ``options`` (scenario flags as Locust arguments; no Locust import),
``wsclient`` (websocket-client under gevent), ``connection`` (one user's connection),
``node`` (one Locust process's share of a run), ``control`` (the master's run control
and verdicts), ``messages`` (what they tell each other), ``users``, ``shape``,
``webui`` (the Realtime SLO tab) and ``plugin`` (the Locust event wiring).
"""
