"""The operator guide and the protocol examples say what the code does."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import msgspec

from reference_server.config import ServerConfig
from rtbench.protocol import decode_client, decode_server
from rtbench.protocol.messages import CLIENT_TYPES, ServerMessage

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_server_md_config_block_lists_every_default() -> None:
    text = (DOCS / "SERVER.md").read_text()
    block = re.search(r"```toml\n(.*?)```", text, re.S)
    assert block is not None
    documented = tomllib.loads(block.group(1))
    defaults = msgspec.to_builtins(ServerConfig())
    defaults.pop("insecure_dev")
    defaults.pop("jwt_secret")
    assert documented == defaults
    msgspec.convert(documented, ServerConfig)  # and it loads


def test_protocol_examples_are_valid_frames_covering_every_type() -> None:
    text = (DOCS / "PROTOCOL.md").read_text()
    examples = text[text.index("## Example exchanges") :]
    client_types, server_types = set(), set()
    for line in examples.splitlines():
        if " → " in line:
            msg = decode_client(line.split(" → ", 1)[1])
            client_types.add(msg.__struct_config__.tag)
        elif " ← " in line:
            msg = decode_server(line.split(" ← ", 1)[1])
            server_types.add(msg.__struct_config__.tag)
    assert client_types == set(CLIENT_TYPES)
    assert server_types == {t.__struct_config__.tag for t in ServerMessage.__args__}
