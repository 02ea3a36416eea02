"""Fixtures of the check tests: the reference server (tests/support) and the third-party
JSON server (tests/thirdparty), each started per test on a free port."""

from tests.support.fixtures import start_server  # noqa: F401
from tests.thirdparty.conftest import json_server  # noqa: F401
