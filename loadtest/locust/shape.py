"""The load shape of a realtime run: the scenario's users, opened over its ramp, until done.

Locust asks the shape once a second how many users to run. The first tick of a test
prepares the run on the master (the scenario as the options say now: the web UI's form
may have changed them) and sets each user class's ``fixed_count``; then the shape keeps
every connection of the plan up until the run has drained and been judged, and ends
the test by returning None. Locust's ``-u`` is the scenario's users (as in ``rtbench
run --users``); the spawn rate follows from ``--ramp``.
"""

from __future__ import annotations

from locust import LoadTestShape

from loadtest.locust.options import spawn_rate
from loadtest.locust.plugin import conductor_of
from loadtest.locust.users import ALL_USERS, classes_for


class RealtimeShape(LoadTestShape):
    """Drives a test through the run's phases (connecting, running, draining, done)."""

    use_common_options = True  # the web UI keeps its users field: it is the scenario's

    def tick(self) -> tuple[int, float, list] | None:
        # Locust gives a shape its runner before the first tick
        conductor = conductor_of(self.runner.environment)  # type: ignore[union-attr]
        if conductor.stale:  # the first tick of a test: a new run
            run = conductor.prepare()
            for cls in ALL_USERS:
                cls.fixed_count = 0
            if run is not None:
                for cls, count in classes_for(run.scenario).items():
                    cls.fixed_count = count
        run = conductor.run
        if run is None or run.phase == "done":
            return None
        classes = list(classes_for(run.scenario))
        return run.plan.connections, spawn_rate(run.scenario), classes
