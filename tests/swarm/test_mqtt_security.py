"""MQTT with passwords, TLS and an ACL, against a real Mosquitto running the README's own config
(examples/mosquitto/secure.conf and swarm.acl, moved to a loopback port). Certificates are made here."""

import asyncio
import datetime
import ipaddress
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import msgspec
import pytest

from swarm.agents.actions import Say, Wait
from swarm.bus import BusError, MqttBus, open_bus, topics
from swarm.bus.broker import Mosquitto, add_user, find_mosquitto
from swarm.bus.url import parse_bus_url, redact, strip_password
from swarm.events import Event

from .test_simulation import Recording, tavern

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "mosquitto"
DEPLOYED = "/etc/mosquitto/swarm/"  # where secure.conf says its files are
# watcher's password needs percent-encoding in a URL
PASSWORDS = {"sim": "s3cret sim", "watcher": "w@tch:er/%pass", "worker": "w0rker"}


class Note(msgspec.Struct):
    text: str


# Certificates: a CA, the broker's certificate for 127.0.0.1, a client certificate, all signed here.

def _key():
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _write(path: Path, key, cert) -> None:
    from cryptography.hazmat.primitives import serialization

    path.with_suffix(".crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    path.with_suffix(".key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                           serialization.PrivateFormat.PKCS8,
                                                           serialization.NoEncryption()))


def _certificate(name: str, key, issuer_name, issuer_key, *, ca: bool = False, ip: str | None = None):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name or subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                                        critical=True)
    if ip:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]),
                                        critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_certificates(folder: Path) -> None:
    """ca.crt, server.crt/key (for 127.0.0.1), client.crt/key (CN sim) and other-ca.crt (an unrelated CA)."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key = _key()
    ca = _certificate("swarm test CA", ca_key, None, ca_key, ca=True)
    _write(folder / "ca", ca_key, ca)
    for name, ip in (("server", "127.0.0.1"), ("client", None)):
        key = _key()
        _write(folder / name, key, _certificate(name if ip is None else ip, key, ca.subject, ca_key, ip=ip))
    other_key = _key()
    _write(folder / "other-ca", other_key, _certificate("another CA", other_key, None, other_key, ca=True))


def secure_broker(folder: Path, *, client_certificates: bool = False) -> Mosquitto:
    """The README's broker (secure.conf, swarm.acl) in `folder`, with users sim and watcher."""
    if find_mosquitto() is None or shutil.which("mosquitto_passwd") is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto); CI installs it")
    pytest.importorskip("cryptography", reason="the certificates are made with cryptography (the dev extra)")
    make_certificates(folder / "certs")
    for user, password in PASSWORDS.items():
        add_user(folder / "passwd", user, password)
    shutil.copy(EXAMPLE / "swarm.acl", folder / "swarm.acl")
    paths = {DEPLOYED: f"{folder}/"}
    if client_certificates:
        paths["require_certificate false"] = "require_certificate true"
    return Mosquitto(folder, config=EXAMPLE / "secure.conf", paths=paths).start()


KNOWN = object()  # the user's password in PASSWORDS


def url(broker: Mosquitto, user: str | None = "sim", password=KNOWN, **params: str | None) -> str:
    """mqtts://user:password@127.0.0.1:port?ca=... for `broker`: user None is anonymous, password None
    leaves it out, ca=None leaves the CA out."""
    params = {"ca": str(broker.config.parent / "certs" / "ca.crt"), **params}
    query = "&".join(f"{k}={v}" for k, v in params.items() if v is not None)
    password = PASSWORDS.get(user) if password is KNOWN else password
    auth = "" if user is None else f"{user}@" if password is None else f"{user}:{quote(password, safe='')}@"
    return f"mqtts://{auth}127.0.0.1:{broker.port}" + (f"?{query}" if query else "")


@pytest.fixture
def broker(tmp_path):
    b = secure_broker(tmp_path)
    yield b
    b.close()


async def echoes(bus, text: str) -> bool:
    """Whether `bus` (user sim) gets back what it publishes to an agent's inbox (the ACL lets it read those)."""
    sub = await bus.subscribe(topics.inbox("v", "Mira"), type=Note)
    await bus.publish(topics.inbox("v", "Mira"), Note(text))
    got = (await sub.get(timeout=15)).payload.text == text
    await sub.close()
    return got


async def refused(bus_url: str, timeout: float = 10.0) -> tuple[str, float]:
    """The BusError message of connecting to `bus_url`, and how long it took to come."""
    bus = open_bus(bus_url, connect_timeout=timeout)
    start = time.monotonic()
    with pytest.raises(BusError) as caught:
        await bus.connect()
    seconds = time.monotonic() - start
    await bus.close()
    return str(caught.value), seconds


# Bus URLs (no broker needed).

def test_urls_carry_credentials_and_tls_settings(monkeypatch):
    monkeypatch.delenv("SWARM_MQTT_PASSWORD", raising=False)
    bus = open_bus("mqtt://sim:p%40ss%3Aw%2Frd@broker.example:1884?format=json")
    assert isinstance(bus, MqttBus) and (bus.username, bus._password, bus.address) == ("sim", "p@ss:w/rd",
                                                                                       "broker.example:1884")
    assert bus.format == "json" and bus._tls is None and "p@ss" not in repr(bus)
    tls = open_bus("mqtts://watcher@broker.example")  # no ca=: the system's CA store
    assert (tls.port, tls.username, tls._password) == (8883, "watcher", None)
    assert tls._tls is not None and tls._tls.verify_mode.name == "CERT_REQUIRED" and tls._tls.check_hostname
    monkeypatch.setenv("SWARM_MQTT_PASSWORD", "from the environment")
    assert open_bus("mqtts://watcher@broker.example")._password == "from the environment"
    assert open_bus("mqtt://watcher:given@h")._password == "given"  # the URL's password wins
    assert open_bus("mqtt://h")._password is None  # no user: anonymous, whatever the environment says
    assert open_bus("mqtt://sim@h", password="keyword")._password == "keyword"  # keyword options override
    parsed = parse_bus_url("mqtts://sim:secret@h:1?ca=/ca.pem&cert=/c.pem&key=/k.pem")
    assert parsed.options == {"ca": "/ca.pem", "cert": "/c.pem", "key": "/k.pem"}
    assert "secret" not in repr(parsed) and str(parsed) == "mqtts://sim:***@h:1?ca=/ca.pem&cert=/c.pem&key=/k.pem"


@pytest.mark.parametrize(("bad", "says"), [
    ("mqtt://sim:hunter2@h:99999", "bad port"),
    ("mqtt://sim:hunter2@h/pool", "has a path"),
    ("mqtt://:hunter2@h", "empty user name"),
    ("mqtt://sim:hunter2@h?ca=/ca.pem", "needs TLS: use mqtts://"),
    ("mqtts://sim:hunter2@h?qos=1", "unknown bus URL parameter 'qos'"),
    ("mqtts://sim:hunter2@h?ca=", "needs a file path"),
    ("mqtts://sim:hunter2@h?ca=/nowhere/ca.pem", "ca=/nowhere/ca.pem: cannot read it"),
    ("mqtts://sim:hunter2@h?key=/k.pem", "needs cert="),
    ("amqp://sim:hunter2@h", "unknown bus"),
])
def test_a_bad_url_is_one_line_that_never_shows_the_password(bad, says):
    with pytest.raises(ValueError) as caught:
        open_bus(bad)
    message = str(caught.value)
    assert says in message and "hunter2" not in message and "\n" not in message


def test_redact_hides_only_the_password():
    assert redact("mqtts://sim:p@ss:w@host:8883?ca=/x") == "mqtts://sim:***@host:8883?ca=/x"
    assert redact("mqtt://sim@host") == "mqtt://sim@host" and redact("local") == "local"
    assert redact("not a url :@") == "not a url :@"
    assert strip_password("mqtt://sim:pw@host:1?format=json") == "mqtt://sim@host:1?format=json"
    assert strip_password(None) is None and strip_password("local") == "local"


def test_watch_and_serve_take_mqtts_and_refuse_other_buses_in_one_line():
    from swarm.tui.watch import WatchSource

    source = WatchSource("mqtts://watcher:hunter2@broker:8883?ca=/ca.pem", "village")
    assert source.model == "watching mqtts://watcher:***@broker:8883?ca=/ca.pem"
    assert source._status(False, 0) == "lost the MQTT broker at broker:8883; reconnecting"
    for command in (["watch", "amqp://sim:hunter2@h", "--sim", "v"], ["serve", "--bus", "local"]):
        r = subprocess.run([sys.executable, "-m", "swarm.cli", *command], cwd=ROOT, capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 2 and "needs an MQTT broker" in r.stderr and "hunter2" not in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1


# Against the README's broker.

async def test_the_right_password_connects_and_a_wrong_one_is_refused_at_once(broker, caplog):
    caplog.set_level(logging.DEBUG)
    async with open_bus(url(broker)) as bus:
        assert await echoes(bus, "hello")
    message, seconds = await refused(url(broker, "sim", "not the password"))
    assert message == (f"the MQTT broker at 127.0.0.1:{broker.port} refused the credentials for user 'sim' "
                       "([code:135] Not authorized)")
    assert seconds < 2  # no retrying until connect_timeout (10 s)
    message, _ = await refused(url(broker, "nobody", "whatever"))
    assert "refused the credentials for user 'nobody'" in message
    logged = caplog.text + broker.log.read_text()
    assert "not the password" not in logged and PASSWORDS["sim"] not in logged


async def test_anonymous_clients_are_refused(broker):
    message, seconds = await refused(url(broker, None))
    assert "refused a connection without credentials" in message and "SWARM_MQTT_PASSWORD" in message
    assert seconds < 2


async def test_the_password_can_come_from_the_environment(broker, monkeypatch):
    monkeypatch.setenv("SWARM_MQTT_PASSWORD", PASSWORDS["watcher"])
    async with open_bus(url(broker, "watcher", password=None)) as bus:
        assert bus.connected and bus._password == PASSWORDS["watcher"]
    monkeypatch.delenv("SWARM_MQTT_PASSWORD")
    message, _ = await refused(url(broker, "watcher", password=None))
    assert "refused the credentials for user 'watcher'" in message


async def test_only_the_simulation_writes_agent_inboxes_and_watchers_only_read(broker):
    async with open_bus(url(broker), client_id="village-sim") as sim, \
            open_bus(url(broker, "watcher"), client_id="watcher") as watcher, \
            open_bus(url(broker, "watcher"), client_id="forger") as forger:
        inbox = await sim.subscribe(topics.inbox("village", topics.ANY), type=Note)
        events = await watcher.subscribe(topics.events("village"), type=Note)
        # The broker drops what the ACL does not allow. aiomqtt does not surface the PUBACK's "not
        # authorized" (Mosquitto 2.0.11 also drops the connection, and the bus reconnects): the one
        # observable thing is that nothing arrives.
        await forger.publish(topics.inbox("village", "Mira"), Note("forged order"))
        await forger.publish(topics.events("village"), Note("forged event"))
        await sim.publish(topics.inbox("village", "Mira"), Note("from the simulation"))
        await sim.publish(topics.events("village"), Note("a real event"))
        assert (await inbox.get(timeout=5)).payload.text == "from the simulation"
        assert (await events.get(timeout=5)).payload.text == "a real event"
        await asyncio.sleep(0.3)  # the forged messages would have come by now
        assert inbox.drain() == [] and events.drain() == []
        # the watcher reads everything under swarm/, the simulation only what it needs (its inboxes)
        await sim.publish(topics.world("village"), Note("snapshot"), retain=True)
        assert (await (await watcher.subscribe(topics.world("village"), type=Note)).get(timeout=5)).payload.text \
            == "snapshot"


async def test_tls_verifies_the_broker_against_ca_or_the_system_store(broker, monkeypatch):
    certs = broker.config.parent / "certs"
    message, seconds = await refused(url(broker, ca=str(certs / "other-ca.crt")))
    assert message.startswith(f"TLS handshake with 127.0.0.1:{broker.port} failed: ")
    assert message.endswith("(is ca= the broker's CA?)") and seconds < 2
    message, _ = await refused(url(broker, ca=None))  # the system's store does not know this test CA
    assert "(is ca= the broker's CA?)" in message
    monkeypatch.setenv("SSL_CERT_FILE", str(certs / "ca.crt"))  # ... until it is the system's store
    async with open_bus(url(broker, ca=None)) as bus:
        assert bus.connected
    plain = url(broker).replace("mqtts://", "mqtt://").partition("?")[0]  # no TLS to a TLS port: never up
    message, _ = await refused(plain, timeout=1)
    assert message.startswith(f"cannot reach the MQTT broker at 127.0.0.1:{broker.port}")


async def test_a_client_certificate_when_the_broker_requires_one(tmp_path):
    broker = secure_broker(tmp_path, client_certificates=True)
    certs = tmp_path / "certs"
    try:
        message, seconds = await refused(url(broker))
        assert message.startswith(f"TLS handshake with 127.0.0.1:{broker.port} failed")
        assert "give cert= and key=" in message and seconds < 2
        async with open_bus(url(broker, cert=str(certs / "client.crt"), key=str(certs / "client.key"))) as bus:
            assert await echoes(bus, "with a certificate")
    finally:
        broker.close()


async def test_a_connection_lost_later_is_retried_not_refused(broker):
    async with open_bus(url(broker), client_id="village-sim") as bus:
        broker.restart()
        assert await echoes(bus, "after the restart")
        assert bus.stats["reconnects"] >= 1


async def test_a_simulation_over_mqtts_with_a_password(broker, tmp_path):
    model = Recording(lambda t: Say(text="welcome") if t.agent.id == "Mira" and t.request.kind == "act" else Wait())
    sim = tavern(model, bus=url(broker), name="village")
    async with open_bus(url(broker, "watcher")) as watcher:
        events = await watcher.subscribe(topics.events("village"), type=Event)
        seen = [e for _ in range(3) for e in await sim.atick()]
        got = [(await events.get(timeout=5)).payload for _ in seen]
        assert [e.seq for e in got] == [e.seq for e in seen] and len(seen) >= 3
        assert any(e.text == 'Mira says: "welcome"' for e in got)
    checkpoint = sim.save(tmp_path / "village.ckpt")
    kept = msgspec.msgpack.decode(checkpoint.read_bytes())["bus"]
    assert kept == strip_password(url(broker)) and quote(PASSWORDS["sim"], safe="") not in kept
    await sim.aclose()


def test_swarm_run_over_mqtts_with_the_password_from_the_environment(broker):
    def run(bus_url: str, password: str):
        command = [sys.executable, "-m", "swarm.cli", "run", str(ROOT / "examples" / "scenario_from_scratch.py"),
                   "--model", "scripted", "--ticks", "2", "--headless", "--json", "--bus", bus_url]
        env = {**os.environ, "SWARM_MQTT_PASSWORD": password}
        return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)

    wrong = run(url(broker, "sim", None), "wrong password")
    assert wrong.returncode == 2 and wrong.stdout == ""
    assert wrong.stderr.strip() == (f"swarm: error: the MQTT broker at 127.0.0.1:{broker.port} refused the "
                                    "credentials for user 'sim' ([code:135] Not authorized)")
    right = run(url(broker, "sim", None), PASSWORDS["sim"])
    assert right.returncode == 0, right.stderr
    assert json.loads(right.stdout.splitlines()[-1])["ticks"] == 2

def test_the_readme_shows_the_tested_config():
    def directives(text: str) -> list[str]:
        return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]

    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Securing a deployment"):]
    blocks = [block.partition("\n")[2] for block in section.split("```conf")[1:3]]
    shown = [directives(block.partition("```")[0]) for block in blocks]
    assert shown == [directives((EXAMPLE / name).read_text()) for name in ("secure.conf", "swarm.acl")]
