"""The runtime over the bus, for programs in any language: `swarm serve` and its wire protocol.

A game engine publishes a GenerateRequest (JSON or msgpack) on `swarm/<name>/runtime/generate` and gets
Token replies, then a Done (or an Error), on its MQTT v5 Response Topic. docs/protocol.md has the details.
"""

from swarm.serve import protocol
from swarm.serve.protocol import (
    GenerateRequest,
    PersonaSpec,
    generate_topic,
    info_topic,
    server_info_topic,
    server_status_topic,
    status_topic,
)
from swarm.serve.server import Server

__all__ = ["GenerateRequest", "PersonaSpec", "Server", "generate_topic", "info_topic", "protocol", "server_info_topic",
           "server_status_topic", "status_topic"]
