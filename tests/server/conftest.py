"""Server tests run the real ``rtbench serve`` subprocess on port 0 with a real client."""

from tests.support.fixtures import reference_server, shared_server, start_server  # noqa: F401
