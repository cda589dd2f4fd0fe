"""The real Mosquitto broker fixture, for the `swarm watch` tests."""

from tests.swarm.conftest import mosquitto

__all__ = ["mosquitto"]
