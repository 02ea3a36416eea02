"""Report test fixtures: a real reference server (the browser is in tests/conftest.py)."""

from __future__ import annotations

from tests.support.fixtures import reference_server  # noqa: F401  (real server, port 0)
