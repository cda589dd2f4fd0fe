"""The runtime over the OpenAI HTTP API: `swarm serve --http HOST:PORT`, for any OpenAI client.

docs/http.md states what is served and how exactly: the prompt a chat becomes, the grammar a response_format
becomes, the extensions, and every error. Needs the `serve` extra (Starlette, uvicorn).
"""

from swarm.serve.http.server import HttpServer, parse_address

__all__ = ["HttpServer", "parse_address"]
