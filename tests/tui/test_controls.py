"""Speed, help, the command palette, and the real app in a pseudo-terminal: it ticks and q quits."""

import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

from textual.command import CommandPalette

from swarm.tui import Control, LiveSource
from swarm.tui.app import SwarmApp
from swarm.tui.source import SPEEDS
from tests.tui.test_app import close, idle, tavern, until

ROOT = Path(__file__).resolve().parents[2]


def make_app(**kw) -> SwarmApp:
    return SwarmApp(LiveSource(tavern(), None, Control(delay=0.1)), refresh_s=0.05, **kw)


async def test_plus_and_minus_change_the_delay_between_ticks():
    app = make_app(paused=True)
    async with app.run_test() as pilot:
        await pilot.press("plus")
        assert app.control.delay == 0.05
        await pilot.press("plus", "plus")
        assert app.control.delay == SPEEDS[0] == 0.0  # no faster than no delay
        await pilot.press("minus", "minus", "minus")
        assert app.control.delay == 0.25
        await pilot.press("q")
    await close(app)


async def test_question_mark_toggles_the_help_panel():
    app = make_app(paused=True)
    async with app.run_test() as pilot:
        assert not app.screen.query("HelpPanel")
        await pilot.press("question_mark")
        await pilot.pause(0.05)
        assert app.screen.query("HelpPanel")
        await pilot.press("question_mark")
        await pilot.pause(0.05)
        assert not app.screen.query("HelpPanel")
        await pilot.press("q")
    await close(app)


async def test_the_command_palette_pauses_and_steps():
    app = make_app(paused=False)
    async with app.run_test() as pilot:
        await until(pilot, lambda: app.source.ticks_run >= 1)
        await pilot.press("ctrl+p")
        await until(pilot, lambda: isinstance(app.screen, CommandPalette))
        await pilot.press(*"pause /")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await until(pilot, lambda: not isinstance(app.screen, CommandPalette))
        assert app.control.paused
        await idle(pilot, app)
        at = app.source.ticks_run
        await pilot.press("ctrl+p")
        await until(pilot, lambda: isinstance(app.screen, CommandPalette))
        await pilot.press(*"step one")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await until(pilot, lambda: app.source.ticks_run == at + 1)
        await pilot.press("q")
    await close(app)


SCRIPT = """
import sys
sys.path.insert(0, {root!r})
from tests.tui.test_app import tavern
from swarm.tui import run_tui
sim = tavern()
report = run_tui(sim, None, delay=0.2)
sim.close()
print("REPORT", report.ticks, flush=True)
"""


def test_the_real_app_in_a_pseudo_terminal_ticks_and_quits_on_q():
    main, child = pty.openpty()
    os.set_blocking(main, False)
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "120", "LINES": "40"}
    env.pop("TEXTUAL", None)
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT.format(root=str(ROOT))], stdin=child, stdout=child,
                            stderr=child, env=env, close_fds=True)
    os.close(child)
    seen = b""

    def read_until(needle: bytes, timeout: float) -> bool:
        nonlocal seen
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            ready, _, _ = select.select([main], [], [], 0.1)
            if ready:
                try:
                    seen += os.read(main, 65536)
                except OSError:  # the child closed the terminal
                    return needle in seen
            if needle in seen:
                return True
        return False

    try:
        assert read_until(b"tick 3", 30), seen[-2000:]
        os.write(main, b"q")
        assert proc.wait(timeout=20) == 0, seen[-2000:]
        read_until(b"never", 0.3)  # what is left in the terminal
        found = re.search(rb"REPORT (\d+)", seen)
        assert found and int(found.group(1)) >= 3, seen[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(main)
