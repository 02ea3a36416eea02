"""Durable storage behind one interface (see ``base.Store``); ``make_store`` picks it by URL."""

from __future__ import annotations

from reference_server.store.base import Store, StoreError
from reference_server.store.memory import MemoryStore
from reference_server.store.sqlite import SqliteStore

__all__ = ["MemoryStore", "SqliteStore", "Store", "StoreError", "make_store"]


def make_store(url: str, synchronous: str = "full", max_batch: int = 2048) -> Store:
    """``sqlite:///relative.db``, ``sqlite:////absolute.db``, ``postgresql://...`` or ``memory``."""
    if url.startswith(("postgresql://", "postgres://")):
        from reference_server.store.postgres import PostgresStore  # asyncpg only when used

        return PostgresStore(url, synchronous, max_batch)
    if url == "memory":
        return MemoryStore()
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///") :]
        if not path:
            raise StoreError("sqlite store URL needs a path: sqlite:///PATH")
        return SqliteStore(path, synchronous, max_batch)
    raise StoreError(f"unknown store {url!r}: use sqlite:///PATH, postgresql://... or memory")
