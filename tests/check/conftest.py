"""Fixtures of the check tests: the reference server (tests/support), the third-party
JSON and Socket.IO servers (tests/thirdparty) and the tiny echo server (tests/loadtest),
each started per test on a free port."""

from tests.loadtest.conftest import echo  # noqa: F401
from tests.support.fixtures import start_server  # noqa: F401
from tests.thirdparty.conftest import json_server, sio_server  # noqa: F401
