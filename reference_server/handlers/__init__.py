"""Request handlers, one module per family of client messages.

Each class takes the machinery it needs (``access``, ``commits``, ``fanout``,
``resume``, ``presence``, ...) and lists its handlers in ``routes()``; ``App``
merges the tables (``dispatch.merge_routes`` insists every client message has
exactly one handler). A handler returns None when done, or a coroutine when it
must wait for the store; it says no by raising ``errors.Refuse``.

| module | messages |
|---|---|
| ``hello`` | hello (identity, welcome, resume), ping |
| ``messaging`` | send, dm, publish |
| ``membership`` | join, leave, members, rooms |
| ``receipts`` | read (and the receipt frames) |
| ``typing_notices`` | typing (and its expiry) |
| ``history`` | history pages |
"""
