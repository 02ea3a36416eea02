"""The engine-neutral run core: what every load driver shares between its sockets and
the verdicts.

- ``report``: what each load process reports (``Ready``, ``Tick``, ``Counts``,
  ``SendDone``, ``Final``), built by the shared tally;
- ``outcome``: the merged ``Outcome``, the pure ``merge`` of the processes' reports,
  the drain rule (``all_in``) and the live panel's ``Progress``;
- ``failures``: failure cause names and their sentences;
- ``entry``: ``run_scenario``, the public entry of a run.

The drivers (``loadtest.engine``, ``loadtest.locust``, the monitor) import this package
and never each other; this package imports no driver but for ``entry`` starting the
native engine (tests/test_layers.py). See docs/ARCHITECTURE.md.
"""
