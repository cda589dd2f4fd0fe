"""The live app: a simulation ticking in a worker thread, watched and steered from the terminal.

Messages go up (the worker posts `Ticked` per tick, `Streamed` while the selected agent's action
is written and `TurnAsked` when an agent the person plays has a turn; the roster posts
`AgentSelected`), attributes go down (the app sets the widgets' reactives). Ticks can come far
faster than a terminal redraws, so the app keeps only the latest data and what events arrived, and
a timer shows them a few times a second.
"""

from __future__ import annotations

from collections.abc import Iterable

from textual import on
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Input, TabbedContent, TabPane

from swarm.events import Event
from swarm.model import NoAction
from swarm.tui.messages import AgentSelected, Finished, Streamed, Ticked, TurnAsked
from swarm.tui.source import SPEEDS, Asked, LiveSource, Partial, TickData
from swarm.tui.widgets import AgentDetailPane, EventLog, MetricsPanel, Roster, RuntimePanel, SimHeader, WorldView

REFRESH_S = 0.25  # the views redraw at most this often, however fast ticks come


class SwarmApp(App):
    """Watch and steer `source` (a `LiveSource`). `refresh_s` is the views' coalescing period."""

    CSS_PATH = "app.tcss"
    TITLE = "swarm"
    BINDINGS = [
        Binding("p", "toggle_pause", "Pause/resume"),
        Binding("s", "step", "Step"),
        Binding("plus,equals_sign", "faster", "Faster", key_display="+"),
        Binding("minus", "slower", "Slower", key_display="-"),
        Binding("i", "inject", "Inject"),
        Binding("c", "take_control", "Play agent"),
        Binding("f", "filter_agents", "Filter agents"),
        Binding("slash", "filter", "Filter events", key_display="/"),
        Binding("w", "toggle_world", "World/agent"),
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("q", "quit", "Quit"),
        Binding("escape", "close_input", "Close", show=False),
        # seeking, for a replay only (see `check_action`); priority, or the roster would take the arrows
        Binding("left", "seek_by(-1)", "Back", key_display="←", priority=True),
        Binding("right", "seek_by(1)", "Forward", key_display="→", priority=True),
        Binding("home", "seek_to(1)", "First", priority=True),
        Binding("end", "seek_to(-1)", "Last", priority=True),
        Binding("g", "goto", "Go to tick"),
    ]
    SEEK_ACTIONS = frozenset({"seek_by", "seek_to", "goto"})

    def __init__(self, source: LiveSource, *, refresh_s: float = REFRESH_S, paused: bool = False) -> None:
        super().__init__()
        self.source, self.control, self.refresh_s = source, source.control, refresh_s
        self.control.pause(paused)
        self.latest: TickData | None = None
        self.ticks_seen = 0  # ticks the worker reported (updated per message, before any redraw)
        self._new_events: list[Event] = []
        self._dirty = False
        self._reset = False  # the next flush starts the event log over (a replay seeked)
        self._help_shown = False
        self.finished: str | None = None  # why the run ended (its ticks ran, or it raised)
        self._partial: Partial | None = None  # the selected agent's action while it is written
        self._partial_dirty = False

    def compose(self) -> ComposeResult:
        yield SimHeader(id="header")
        with Horizontal(id="main"):
            with Vertical(id="left"):
                yield Input(placeholder="filter agents by name, place or action (enter or escape to close)",
                            id="agent-filter")
                with Vertical(id="roster-box"):
                    yield Roster(id="roster")
                yield Input(placeholder="filter events (enter to apply, escape to close)", id="filter")
                yield Input(placeholder="message to the selected agent (enter to send)", id="inject")
                yield Input(placeholder="go to tick (enter to go, escape to cancel)", id="goto", type="integer")
                yield EventLog(id="events")
            with Vertical(id="right"):
                with TabbedContent(id="tabs", initial="agent-tab"):
                    with TabPane("Agent", id="agent-tab"), VerticalScroll(id="detail-scroll"):
                        yield AgentDetailPane(id="detail")
                    with TabPane("World", id="world-tab"), VerticalScroll(id="world-scroll"):
                        yield WorldView(id="world")
                with VerticalScroll(id="metrics-scroll"):  # a scenario with many metrics scrolls
                    yield MetricsPanel(id="metrics")
                yield RuntimePanel(id="runtime")
        yield Footer()

    def on_mount(self) -> None:
        header = self.query_one(SimHeader)
        header.scenario, header.model = self.source.scenario, self.source.model
        header.status = "paused" if self.control.paused else "running"
        self.query_one(RuntimePanel).note = getattr(self.source, "no_stats", "no runtime stats")
        self.query_one(Roster).focus()
        self.set_interval(self.refresh_s, self.flush)
        self.run_worker(self._simulate, thread=True, exclusive=True, name="simulation")

    def _simulate(self) -> None:
        live = {} if not isinstance(self.source, LiveSource) else {
            "streamed": lambda: self.post_message(Streamed()),
            "asked": lambda asked: self.post_message(TurnAsked(asked))}
        self.source.run(lambda data: self.post_message(Ticked(data)), lambda why: self.post_message(Finished(why)),
                        **live)

    # -- messages up ---------------------------------------------------------------------

    def on_ticked(self, message: Ticked) -> None:
        data = message.data
        if self.latest is not None and data.tick > self.latest.tick:
            self.ticks_seen += data.tick - self.latest.tick
        self.latest = data
        if data.reset:
            self._new_events, self._reset = list(data.events), True
        else:
            self._new_events += data.events
        self._dirty = True
        if self._partial is not None:  # a tick ended: the action written during it is in the data now
            self._partial, self._partial_dirty = None, True

    def on_streamed(self, message: Streamed) -> None:
        self._partial, self._partial_dirty = self.source.take_partial(), True

    def on_finished(self, message: Finished) -> None:
        self.finished = message.why
        self.query_one(SimHeader).status = message.why
        self.notify(message.why, severity="error" if message.why.startswith("error") else "information")

    def on_turn_asked(self, message: TurnAsked) -> None:
        from swarm.tui.play import PlayScreen  # the form's widgets load when someone plays

        asked = message.asked
        self.push_screen(PlayScreen(asked), lambda value: self._answer(asked, value))

    def _answer(self, asked: Asked, value: object) -> None:
        if isinstance(value, NoAction):  # given back: this turn waits, the model plays from the next tick
            self.control.give_back(asked.agent)
            self.notify(f"{asked.agent} is played by its model again", timeout=2)
        asked.reply.put(value)

    def on_agent_selected(self, message: AgentSelected) -> None:
        self.control.select(message.agent)
        self.query_one(WorldView).selected = message.agent

    # -- attributes down (a few times a second) -------------------------------------------------

    def flush(self) -> None:
        if self._partial_dirty:
            self._partial_dirty = False
            self.query_one(AgentDetailPane).partial = self._partial
        if not self._dirty or self.latest is None:
            return
        data, events = self.latest, self._new_events
        self._dirty, self._new_events = False, []
        if self._reset:
            self._reset = False
            self.query_one(EventLog).reset()
        header = self.query_one(SimHeader)
        header.tick, header.clock, header.model = data.tick, data.clock, data.model
        self.query_one(Roster).show(data.rows)
        self._roster_title()
        self.query_one(EventLog).add(events)
        metrics = self.query_one(MetricsPanel)
        metrics.history, metrics.metrics = data.history, data.metrics
        self.query_one(RuntimePanel).stats = data.stats
        if data.detail is not None or self.control.selected is None:
            self.query_one(AgentDetailPane).detail = data.detail
        self.query_one(WorldView).world = data.world

    # -- actions -----------------------------------------------------------------------------

    def action_toggle_pause(self) -> None:
        if self.finished is not None:
            self.notify(f"the run is over ({self.finished})", severity="warning")
            return
        self.control.pause(not self.control.paused)
        self.query_one(SimHeader).status = "paused" if self.control.paused else "running"

    def action_step(self) -> None:
        if not self.control.paused:
            self.action_toggle_pause()
        self.control.step()

    def _speed(self, by: int) -> None:
        now = min(range(len(SPEEDS)), key=lambda i: abs(SPEEDS[i] - self.control.delay))
        delay = SPEEDS[max(0, min(len(SPEEDS) - 1, now + by))]
        self.control.set_delay(delay)
        self.notify(f"{delay:g} s between ticks", timeout=1.5)

    def action_faster(self) -> None:
        self._speed(-1)

    def action_slower(self) -> None:
        self._speed(+1)

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.value = self.query_one(EventLog).filter
        box.display = True
        box.focus()

    def action_filter_agents(self) -> None:
        box = self.query_one("#agent-filter", Input)
        box.value = self.query_one(Roster).filter
        box.display = True
        box.focus()

    @on(Input.Changed, "#agent-filter")
    def filter_agents(self, event: Input.Changed) -> None:
        self.query_one(Roster).set_filter(event.value)  # as you type: the roster rebuilds only on a change
        self._roster_title()

    def _roster_title(self) -> None:
        self.query_one("#roster-box").border_title = self.query_one(Roster).summary

    @on(Input.Submitted, "#agent-filter")
    def close_agent_filter(self, event: Input.Submitted) -> None:
        self.action_close_input()

    def action_toggle_world(self) -> None:
        tabs = self.query_one(TabbedContent)
        tabs.active = "world-tab" if tabs.active == "agent-tab" else "agent-tab"

    def action_inject(self) -> None:
        agent = self.query_one(Roster).selected
        if agent is None:
            self.notify("no agent selected", severity="warning")
            return
        box = self.query_one("#inject", Input)
        box.placeholder = f"message to {agent} (enter to send, escape to cancel)"
        box.value = ""
        box.display = True
        box.focus()

    def action_take_control(self) -> None:
        agent = self.query_one(Roster).selected
        if agent is None:
            self.notify("no agent selected", severity="warning")
        elif agent in self.control.played:
            self.control.give_back(agent)
            self.notify(f"{agent} is played by its model again from its next turn", timeout=2)
        else:
            self.control.take(agent)
            self.notify(f"you play {agent} from its next turn: a form asks for its action", timeout=3)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        replay = hasattr(self.control, "seek")
        if action in ("inject", "take_control"):
            return not replay
        if action in self.SEEK_ACTIONS:
            return replay and not isinstance(self.focused, Input)
        return True

    def _seek(self, position: int) -> None:
        """Pause a replay at `position` (ticks shown); the source clamps it to the log."""
        self.control.pause(True)
        self.control.seek(position)
        self.finished = None
        self.query_one(SimHeader).status = "paused"

    def action_seek_by(self, delta: int) -> None:
        self._seek((self.latest.tick if self.latest is not None else 0) + delta)

    def action_seek_to(self, position: int) -> None:
        self._seek(position if position >= 0 else self.source.total)

    def action_goto(self) -> None:
        box = self.query_one("#goto", Input)
        box.value = ""
        box.display = True
        box.focus()

    @on(Input.Submitted, "#goto")
    def go_to_tick(self, event: Input.Submitted) -> None:
        if event.value.strip().lstrip("-").isdigit():
            self._seek(int(event.value))
        self.action_close_input()

    def action_close_input(self) -> None:
        for box in self.query(Input):
            box.display = False
        self.query_one(Roster).focus()

    def action_help(self) -> None:
        self._help_shown = not self._help_shown
        if self._help_shown:
            self.action_show_help_panel()
        else:
            self.action_hide_help_panel()

    @on(Input.Submitted, "#filter")
    def apply_filter(self, event: Input.Submitted) -> None:
        self.query_one(EventLog).filter = event.value.strip()
        self.action_close_input()

    @on(Input.Submitted, "#inject")
    def send_message(self, event: Input.Submitted) -> None:
        agent, text = self.query_one(Roster).selected, event.value.strip()
        if agent is not None and text:
            self.control.inject(agent, text)
            self.notify(f"to {agent}: {text}", timeout=2)
        self.action_close_input()

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("Pause / resume", "Pause or resume the simulation (p)", self.action_toggle_pause)
        yield SystemCommand("Step one tick", "Run one tick while paused (s)", self.action_step)
        yield SystemCommand("Faster", "Less delay between ticks (+)", self.action_faster)
        yield SystemCommand("Slower", "More delay between ticks (-)", self.action_slower)
        yield SystemCommand("Inject a message", "Send a message to the selected agent (i)", self.action_inject)
        yield SystemCommand("Play the agent", "Take control of the selected agent, or give it back (c)",
                            self.action_take_control)
        yield SystemCommand("Filter events", "Show only events containing a text (/)", self.action_filter)
        yield SystemCommand("Filter agents", "Show only agents whose name, place or action contains a text (f)",
                            self.action_filter_agents)
        yield SystemCommand("World / agent", "Switch the right pane between the world and the agent (w)",
                            self.action_toggle_world)

    async def action_quit(self) -> None:
        self.control.stop()
        self.exit()

    def on_unmount(self) -> None:
        self.control.stop()  # however the app ends, the worker must not wait on a pause forever
