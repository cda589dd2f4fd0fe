"""The wire protocol of `swarm serve` and docs/protocol.md, which is generated from it."""

import typing
from pathlib import Path

import msgspec

from swarm.bus import open_bus
from swarm.serve import protocol, status_topic
from swarm.serve.docs import EXAMPLE_ERROR, EXAMPLE_REPLIES, EXAMPLE_REQUEST, render

DOC = Path(__file__).parents[2] / "docs" / "protocol.md"


def test_docs_protocol_md_is_generated_from_the_types():
    assert DOC.read_text() == render(), "docs/protocol.md is stale: run python -m swarm.serve.docs > docs/protocol.md"


def test_the_documented_examples_are_valid_messages():
    for encode in (msgspec.json.encode, msgspec.msgpack.encode):
        format, request = protocol.read_request(encode(EXAMPLE_REQUEST))
        assert request == EXAMPLE_REQUEST and format == ("json" if encode is msgspec.json.encode else "msgpack")
    # the streamed pieces add up to the text, as the docs say they do
    assert "".join(r.token for r in EXAMPLE_REPLIES[:-1]) == EXAMPLE_REPLIES[-1].text
    for r in [*EXAMPLE_REPLIES, EXAMPLE_ERROR]:
        data = msgspec.json.encode(r)
        assert msgspec.json.decode(data, type=type(r)) == r and b'"done":' in data
    assert set(protocol.ERROR_CODES) == set(typing.get_args(protocol.ErrorCode))


async def test_the_bus_presence_message_is_the_documented_status():
    async with open_bus("local", format="json", presence=status_topic("v")) as bus:
        sub = await bus.subscribe(status_topic("v"), type=protocol.Status)
        assert (await sub.get(timeout=1)).payload == protocol.Status(client=bus.client_id, status="online")


def test_formats_are_told_apart_by_the_payload():
    assert protocol.detect_format(msgspec.msgpack.encode({"prompt": "x"})) == "msgpack"
    assert protocol.detect_format(msgspec.msgpack.encode({f"k{i}": i for i in range(20)})) == "msgpack"  # map16
    for data in (b'{"prompt": "x"}', b' {"a": 1}', b"", b"garbage", msgspec.msgpack.encode([1])):
        assert protocol.detect_format(data) == "json"
