"""swarm: multi-agent simulation on small language models."""

__version__ = "0.1.0"
