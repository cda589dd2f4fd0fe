"""Share groups (MQTT v5 shared subscriptions): each message goes to one subscription of the group, on
LocalBus and over a real Mosquitto; and `MqttBus.take_over`, which recovers what the broker queued for a
member that is gone."""

import asyncio
import collections

import pytest

from swarm.bus import LocalBus, MqttBus, open_bus

from .link import Link

TOPIC = "jobs/run"


async def drained(subs, settle: float = 0.3) -> list[list[int]]:
    """What each subscription holds once nothing more has arrived for `settle` seconds."""
    while True:
        before = [len(sub) for sub in subs]
        await asyncio.sleep(settle)
        if [len(sub) for sub in subs] == before:
            return [[msg.payload for msg in sub.drain()] for sub in subs]


def exactly_once(got: list[list[int]], n: int) -> None:
    counts = collections.Counter(x for each in got for x in each)
    assert sorted(counts) == list(range(n)) and set(counts.values()) == {1}, counts


async def test_local_group_members_take_turns_and_get_no_retained_message():
    async with LocalBus() as bus:
        await bus.publish(TOPIC, -1, retain=True)
        group = [await bus.subscribe(TOPIC, int, share="workers") for _ in range(3)]
        other = await bus.subscribe(TOPIC, int, share="auditors")
        plain = await bus.subscribe(TOPIC, int)
        for i in range(9):
            await bus.publish(TOPIC, i)
        got = [[m.payload for m in sub.drain()] for sub in group]
        exactly_once(got, 9)
        assert [len(each) for each in got] == [3, 3, 3]
        assert [m.payload for m in other.drain()] == list(range(9))  # another group gets its own copy
        assert [m.payload for m in plain.drain()] == [-1, *range(9)]  # only a plain subscription gets the retained one
        await group[0].close()  # the others share what is left
        for i in range(4):
            await bus.publish(TOPIC, i)
        assert sorted(m.payload for sub in group[1:] for m in sub.drain()) == [0, 1, 2, 3]


async def test_services_in_one_group_answer_each_request_once():
    handled = collections.Counter()
    async with LocalBus() as bus:
        for name in "ab":
            await bus.serve(TOPIC, lambda msg, name=name: handled.update(name) or name, share="workers")
        replies = [await bus.request(TOPIC, i) for i in range(10)]
        assert handled == {"a": 5, "b": 5} and sorted(replies) == ["a"] * 5 + ["b"] * 5


@pytest.mark.parametrize("share", ["a/b", "a+", "#", ""])
async def test_a_share_name_with_mqtt_wildcards_or_slashes_is_refused(share):
    async with LocalBus() as bus:
        with pytest.raises(ValueError, match="share group name"):
            await bus.subscribe(TOPIC, share=share)


async def test_mqtt_group_members_on_several_buses_get_each_message_once(mosquitto):
    buses = [open_bus(mosquitto.url, client_id=f"member-{i}") for i in range(3)]
    async with open_bus(mosquitto.url) as publisher, buses[0], buses[1], buses[2]:
        await publisher.publish(TOPIC, -1, retain=True)  # Mosquitto 2.0 sends it to shared subscriptions too
        group = [await bus.subscribe(TOPIC, int, share="workers") for bus in buses]
        second = await buses[0].subscribe(TOPIC, int, share="workers")  # two members on one bus
        plain = await buses[0].subscribe(TOPIC, int)  # and a plain subscription beside them
        for i in range(30):
            await publisher.publish(TOPIC, i)
        got = await drained([*group, second])
        exactly_once(got, 30)
        assert sum(1 for each in got[:3] if each) > 1 and got[3]  # spread over the buses, and within one
        assert [m.payload for m in plain.drain()] == [-1, *range(30)]


async def test_a_member_that_leaves_stops_getting_messages(mosquitto):
    async with open_bus(mosquitto.url) as publisher, open_bus(mosquitto.url) as a, open_bus(mosquitto.url) as b:
        sub_a = await a.subscribe(TOPIC, int, share="workers")
        sub_b = await b.subscribe(TOPIC, int, share="workers")
        await sub_a.close()
        for i in range(10):
            await publisher.publish(TOPIC, i)
        assert await drained([sub_b]) == [list(range(10))]


async def test_take_over_recovers_what_the_broker_queued_for_a_member_that_is_gone(mosquitto):
    presence = "jobs/members/gone"
    async with Link(mosquitto.port) as link, open_bus(mosquitto.url) as publisher:
        gone = MqttBus.from_url(link.url, client_id="gone", presence=presence, session_expiry=60)
        async with gone, open_bus(mosquitto.url) as live:
            await gone.subscribe(TOPIC, int, share="workers")
            alive = await live.subscribe(TOPIC, int, share="workers")
            link.cut()  # its session stays on the broker, in the group
            while not gone.stats["reconnects"] and gone.connected:
                await asyncio.sleep(0.01)
            for i in range(10):
                await publisher.publish(TOPIC, i)
            [first] = await drained([alive])
            assert len(first) < 10  # Mosquitto queued the rest for the member that is away
            taken = await live.take_over("gone", TOPIC, "workers", until=presence)
            assert all(isinstance(m.payload, bytes) and not m.retain for m in taken)
            exactly_once([first, [live.codec.decode(m.payload, int) for m in taken]], 10)
            for i in range(10, 20):  # the group is the live member alone now
                await publisher.publish(TOPIC, i)
            assert await drained([alive]) == [list(range(10, 20))]


async def test_take_over_of_a_session_that_is_not_there_takes_nothing(mosquitto, caplog):
    async with open_bus(mosquitto.url) as bus:
        await bus.publish("jobs/members/none", "offline", retain=True)
        assert await bus.take_over("none", TOPIC, "workers", until="jobs/members/none") == []
        # no retained message to mark the end: it waits `timeout`, then says so
        assert await bus.take_over("none", TOPIC, "workers", until="jobs/members/unknown", timeout=0.3) == []
        assert "no retained message on jobs/members/unknown" in caplog.text
