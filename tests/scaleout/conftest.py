"""Fixtures for the scale-out tests: a schema and a key prefix of their own per test.

Tests run against the machine's real PostgreSQL and Redis (``postgres_dsn`` and
``redis_url`` from tests/conftest.py); each test gets a fresh PostgreSQL schema
(``?search_path=``, which the store creates) and a fresh Redis key prefix, both
removed afterwards, so runs never see each other's rooms. Outage tests use
instances of their own (``own_redis``, ``own_postgres``) that they may stop.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
import redis.asyncio as aioredis

from tests.conftest import need_service
from tests.scaleout.services import OwnPostgres, OwnRedis
from tests.support.fixtures import start_server  # noqa: F401


def with_schema(dsn: str, schema: str) -> str:
    return f"{dsn}{'&' if '?' in dsn else '?'}search_path={schema}"


@pytest.fixture
async def pg_dsn(postgres_dsn: str) -> AsyncIterator[str]:
    """A DSN whose tables live in a schema of this test's own (dropped afterwards)."""
    schema = f"rtbench_t_{secrets.token_hex(4)}"
    yield with_schema(postgres_dsn, schema)
    conn = await asyncpg.connect(postgres_dsn)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture
async def redis_prefix(redis_url: str) -> AsyncIterator[str]:
    """A key and channel prefix of this test's own (its keys are deleted afterwards)."""
    prefix = f"rtbench-t-{secrets.token_hex(4)}"
    yield prefix
    client = aioredis.Redis.from_url(redis_url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=500)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture(scope="module")
def own_redis() -> Iterator[OwnRedis]:
    """A redis-server of the test module's own, on a free port; tests may stop and start it."""
    server = OwnRedis()
    need_service("redis-server binary", server.available, "install Debian's redis-server")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[OwnPostgres]:
    """A PostgreSQL cluster of the test module's own (initdb in a temp dir)."""
    server = OwnPostgres()
    need_service("PostgreSQL server binaries", server.available, "install Debian's postgresql")
    server.start()
    try:
        yield server
    finally:
        server.destroy()
