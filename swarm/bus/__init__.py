"""The message bus: LocalBus in process (the default) or MqttBus over an MQTT v5 broker.

    bus = open_bus("mqtt://127.0.0.1:1883?format=json", client_id="village-sim")
    async with bus:
        sub = await bus.subscribe(topics.inbox("village", topics.ANY), type=Observation)
        await bus.publish(topics.events("village"), event)
"""

from swarm.bus import topics
from swarm.bus.base import BACKENDS, Bus, BusError, Message, Service, Subscription, open_bus, register
from swarm.bus.local import LocalBus
from swarm.bus.mqtt import MqttBus

__all__ = ["BACKENDS", "Bus", "BusError", "LocalBus", "Message", "MqttBus", "Service", "Subscription", "open_bus",
           "register", "topics"]
