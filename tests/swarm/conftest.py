"""A real Mosquitto broker per test, on a free loopback port (skipped where mosquitto is not installed)."""

from __future__ import annotations

import pytest

from swarm.bus.broker import Mosquitto, find_mosquitto, free_port

__all__ = ["free_port"]


@pytest.fixture
def mosquitto(tmp_path):
    if find_mosquitto() is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto); CI installs it")
    broker = Mosquitto(tmp_path, max_queued_messages=None).start()
    yield broker
    broker.stop()
