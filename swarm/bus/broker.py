"""A local Mosquitto broker on a free loopback port: for tests, benchmarks and trying MQTT on one machine.

Production runs point the bus at their own broker; this only starts the `mosquitto` binary
(apt-get install mosquitto) with a throwaway config, or with a deployment's config moved onto a loopback
port (`config=`, `paths=`), which is how the tests run examples/mosquitto/secure.conf itself.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_mosquitto() -> str | None:
    return shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)


def add_user(password_file: str | Path, user: str, password: str) -> Path:
    """Add (or change) `user` in a Mosquitto password file, creating the file if needed, with the
    `mosquitto_passwd` tool that comes with the mosquitto package."""
    tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    password_file = Path(password_file)
    create = [] if password_file.exists() else ["-c"]
    done = subprocess.run([tool, "-b", *create, str(password_file), user, password], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"mosquitto_passwd could not add {user!r} to {password_file}: {done.stderr.strip()}")
    return password_file


class Mosquitto:
    """A mosquitto process listening on 127.0.0.1:`port`, restartable on the same port.

    `max_queued_messages=0` lifts mosquitto's default cap of 1,000 messages queued for a slow
    QoS 1 subscriber (beyond it, the broker drops messages without telling anyone). `persistence=True`
    keeps sessions (and the messages queued for them) across a restart, in `workdir`.

    By default anyone may connect, without TLS. `config` is a mosquitto.conf to run instead (passwords,
    ACL, a TLS listener): its one `listener` moves to 127.0.0.1:`port`, and each key of `paths` found in
    it is replaced by its value (e.g. {"/etc/mosquitto/swarm/": "/tmp/x/"}). `url` is then mqtts://
    when the config gives the listener a certificate.
    """

    def __init__(self, workdir: str | Path | None = None, port: int | None = None, binary: str | None = None,
                 max_queued_messages: int | None = 0, *, config: str | Path | None = None,
                 paths: dict[str, str] | None = None, persistence: bool = False):
        self.binary = binary or find_mosquitto()
        if self.binary is None:
            raise RuntimeError("mosquitto is not installed (apt-get install mosquitto)")
        self._tmp = None if workdir is not None else tempfile.TemporaryDirectory(prefix="swarm-mosquitto-")
        workdir = Path(workdir if workdir is not None else self._tmp.name)
        self.port = port or free_port()
        self.log = workdir / "mosquitto.log"
        self.config = workdir / "mosquitto.conf"
        if config is None:
            access = f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
        else:
            access = _on_loopback(Path(config).read_text(), self.port, paths or {})
        tls = re.search(r"^\s*certfile\s", access, re.MULTILINE) is not None
        self.url = f"{'mqtts' if tls else 'mqtt'}://127.0.0.1:{self.port}"
        queued = "" if max_queued_messages is None else f"max_queued_messages {max_queued_messages}\n"
        # Started as root, mosquitto drops to the user "mosquitto", who cannot read the password file, ACL
        # and keys in the caller's private temporary folder, nor write its persistence there: this throwaway
        # broker stays the caller.
        stay = "user root\n" if os.geteuid() == 0 else ""
        persist = f"persistence true\npersistence_location {workdir}/\n" if persistence else "persistence false\n"
        self.config.write_text(f"{access}{persist}{queued}{stay}"
                               "log_dest stderr\nlog_type error\nlog_type warning\n")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 5.0) -> Mosquitto:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen([self.binary, "-c", str(self.config)], stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"mosquitto did not start on port {self.port}:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> Mosquitto:
        return self.start() if self.process is None else self

    def __exit__(self, *exc) -> None:
        self.close()


def _on_loopback(config: str, port: int, paths: dict[str, str]) -> str:
    """`config` with its one listener on 127.0.0.1:`port` and the `paths` replaced, ending in a newline."""
    listener = re.compile(r"^\s*listener\s.*$", re.MULTILINE)
    found = len(listener.findall(config))
    if found != 1:
        raise ValueError(f"a config to run on a loopback port needs exactly one listener line, found {found}")
    config = listener.sub(f"listener {port} 127.0.0.1", config)
    for old, new in paths.items():
        config = config.replace(old, new)
    return config if config.endswith("\n") else config + "\n"
