"""A local Mosquitto broker on a free loopback port: for tests, benchmarks and trying MQTT on one machine.

Production runs point the bus at their own broker; this only starts the `mosquitto` binary
(apt-get install mosquitto) with a throwaway config.
"""

from __future__ import annotations

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


class Mosquitto:
    """A mosquitto process listening on 127.0.0.1:`port`, restartable on the same port.

    `max_queued_messages=0` lifts mosquitto's default cap of 1,000 messages queued for a slow
    QoS 1 subscriber (beyond it, the broker drops messages without telling anyone).
    """

    def __init__(self, workdir: str | Path | None = None, port: int | None = None, binary: str | None = None,
                 max_queued_messages: int | None = 0):
        self.binary = binary or find_mosquitto()
        if self.binary is None:
            raise RuntimeError("mosquitto is not installed (apt-get install mosquitto)")
        self._tmp = None if workdir is not None else tempfile.TemporaryDirectory(prefix="swarm-mosquitto-")
        workdir = Path(workdir if workdir is not None else self._tmp.name)
        self.port = port or free_port()
        self.url = f"mqtt://127.0.0.1:{self.port}"
        self.log = workdir / "mosquitto.log"
        self.config = workdir / "mosquitto.conf"
        queued = "" if max_queued_messages is None else f"max_queued_messages {max_queued_messages}\n"
        self.config.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n{queued}"
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
