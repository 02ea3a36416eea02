"""Read a TOML file into a typed msgspec struct, with one-line errors a person can act on.

The SLO file, scenario files, the monitor's and the server's config files all go
through here, so every one of them reports an unreadable file, bad TOML or a wrong
field the same way: the file, then what is wrong (msgspec names the field path).
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import msgspec

T = TypeVar("T")


def load_toml_struct(
    path: str | Path, type_: type[T], what: str, error: type[Exception] = ValueError
) -> T:
    """Decode ``path`` as ``type_``; raise ``error`` with one line naming ``what`` and the file."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    try:
        return msgspec.toml.decode(raw, type=type_)
    except msgspec.ValidationError as exc:
        raise error(f"invalid {what} {path}: {exc}") from None
    except msgspec.DecodeError as exc:
        raise error(f"{what} {path} is not valid TOML: {exc}") from None
