"""The game API: swarm inside a game loop, one shared engine, many cheap character handles, a frame budget.

    runtime = GameRuntime("swarm-tiny")
    mira = runtime.character("Mira", Persona(name="Mira", role="innkeeper", traits="warm, nosy"))
    runtime.warmup()                                   # at load time: prefill every persona prompt
    line = mira.say("Any news?", on_token=bubble.append, on_done=bubble.close)
    while running:                                     # the game's frame loop
        runtime.update(budget_ms=4)                    # at most ~4 ms of model work, then the callbacks
        ...

`update` runs the engine for at most the budget (steps are sized to the time left, so a long
prompt is prefilled over several frames) and then fires `on_token` / `on_done` on the calling
thread. With `threaded=True` the engine runs in a background thread instead and `update` only
fires the callbacks that arrived, so the game thread never runs the model at all.

A character's prompt is its persona's system message, its recent exchanges (kept in the
prefix cache between lines) and the new text. Errors in a request (an unknown adapter, a schema
the model cannot follow, a prompt too long) raise from `say`, before anything is queued.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from swarm.agents.agent import add_exchange
from swarm.agents.persona import ACT_INSTRUCTION, Persona
from swarm.runtime.chat import fit_prompt, render_chat

__all__ = ["ACT_INSTRUCTION", "CHAT_INSTRUCTION", "Character", "GameRuntime", "Line"]

CHAT_INSTRUCTION = "Stay in character. Answer in one or two short sentences."
TokenCallback = Callable[["Line", str], None]
DoneCallback = Callable[["Line"], None]


class Line:
    """One request to a character: its text so far, then the final text (and `value` with a schema)."""

    def __init__(self, character: Character, text: str, on_token: TokenCallback | None,
                 on_done: DoneCallback | None):
        self.character, self.prompt_text = character, text
        self.on_token, self.on_done = on_token, on_done
        self.text = ""  # what has been generated (and handed to on_token) so far
        self.tokens = 0  # tokens generated so far (a piece handed to on_token may hold several)
        self.done = False
        self.finish_reason: str | None = None  # "stop", "length", "cancelled" or "error"
        self.value: Any = None
        self.error: str | None = None
        self._handle = None  # the engine's RequestHandle once submitted
        self._cancelled = False

    def cancel(self) -> None:
        """Stop generating (its KV blocks are freed); `on_done` still fires, with finish_reason "cancelled"."""
        self._cancelled = True
        self.character.runtime._cancel(self)

    def result(self, timeout: float | None = None) -> Line:
        """Wait for the end (driving the engine, or waiting on the worker thread), firing callbacks."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.done:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"{self.character.name}'s line is not done after {timeout} s")
            runtime = self.character.runtime
            if runtime.threaded:  # sleep until the worker's next event: a thread spinning here starves it of the GIL
                runtime._fire(wait=0.05)
            runtime.update(50)
        return self

    def __repr__(self) -> str:
        state = self.finish_reason or "generating"
        return f"Line({self.character.name!r}, {state}, {self.text!r})"


class Character:
    """A persona the runtime plays: a handle that costs nothing until it speaks."""

    def __init__(self, runtime: GameRuntime, name: str, persona: Persona, adapter: str | None, history_turns: int):
        self.runtime, self.name, self.persona, self.adapter = runtime, name, persona, adapter
        self.history_turns = history_turns
        self.history: list[dict[str, str]] = []  # alternating user / assistant messages

    @property
    def system(self) -> str:
        return self.persona.system_message(self.runtime.world, self.runtime.instruction)

    def messages(self, text: str) -> list[dict[str, str]]:
        return [{"role": "system", "content": self.system}, *self.history, {"role": "user", "content": text}]

    def say(self, text: str, *, schema: Any = None, on_token: TokenCallback | None = None,
            on_done: DoneCallback | None = None, max_tokens: int | None = None, temperature: float | None = None,
            top_p: float | None = None, seed: int | None = None) -> Line:
        """Ask this character to answer `text` (what the player or the world says to it). Returns at once.

        `schema` constrains the answer (a msgspec type: `line.value` is the decoded object). `seed` with
        `temperature` makes sampling reproducible; `temperature=0` is greedy.
        """
        return self.runtime._say(self, text, schema, on_token, on_done, max_tokens, temperature, top_p, seed)

    def remember(self, user: str, answer: str) -> None:
        """Add an exchange to the character's history (done for each finished line)."""
        self.history = add_exchange(self.history, user, answer, self.history_turns)

    def reset(self) -> None:
        self.history = []

    def __repr__(self) -> str:
        return f"Character({self.name!r}, adapter={self.adapter!r})"


class GameRuntime:
    """The shared engine behind every character.

    `model` is a bundled name or a checkpoint folder (or pass a ready `engine`). `world` describes the
    setting and `instruction` says how to answer (every default persona system prompt ends with both;
    `ACT_INSTRUCTION` asks for one JSON action, as swarm's simulations do). Sampling defaults apply to every line unless
    `say` overrides them. `threaded=True` runs the engine in a background thread (`update` then only
    fires callbacks); otherwise `update(budget_ms)` runs it on the calling thread within the budget.
    """

    def __init__(self, model: str = "swarm-tiny", *, engine=None, world: str = "",
                 instruction: str = CHAT_INSTRUCTION, threaded: bool = False, max_tokens: int = 48,
                 temperature: float = 0.7, top_p: float = 0.95, history_turns: int = 4):
        if engine is None:
            from swarm.runtime import Engine

            engine = Engine.from_pretrained(model)
        self.engine, self.world, self.instruction, self.threaded = engine, world, instruction, threaded
        self.defaults = {"max_tokens": max_tokens, "temperature": temperature, "top_p": top_p}
        self.history_turns = history_turns
        self.characters: dict[str, Character] = {}
        self.closed = False
        self._live: list[Line] = []  # submitted, not yet finished (owned by whoever runs the engine)
        self._events: queue.SimpleQueue = queue.SimpleQueue()  # (line, piece or None) for the callbacks
        self._commands: queue.SimpleQueue = queue.SimpleQueue()  # ("submit"/"cancel", line, ...) to the worker
        self._wake = threading.Event()
        self._worker: threading.Thread | None = None
        self.worker_error: BaseException | None = None
        if threaded:
            self._worker = threading.Thread(target=self._work, name="swarm-runtime", daemon=True)
            self._worker.start()

    # -- characters ----------------------------------------------------------------------

    def character(self, name: str, persona: Persona | str | None = None, adapter: str | None = None) -> Character:
        """The handle for `name` (created on first call). `persona` is a Persona, a role ("innkeeper"), or
        None (just the name); `adapter` names a LoRA adapter the engine knows (default: the persona's)."""
        if name in self.characters and persona is None and adapter is None:
            return self.characters[name]
        if isinstance(persona, str) or persona is None:
            persona = Persona(name=name, role=persona or "")
        adapter = adapter if adapter is not None else persona.adapter
        if adapter is not None and adapter not in self.engine.adapters():
            known = ", ".join(self.engine.adapters()) or "none"
            raise ValueError(f"unknown adapter {adapter!r} for {name} (the model has: {known})")
        self.characters[name] = Character(self, name, persona, adapter, self.history_turns)
        return self.characters[name]

    def warmup(self, characters: Iterable[Character | str] | None = None, pin: bool = False) -> int:
        """Prefill the persona prompts of `characters` (default: all) so their first lines start fast; call
        it at load time (it blocks until done). `pin=True` keeps those prefixes resident. Returns the
        prompt tokens computed (0 for prefixes already cached)."""
        from swarm.runtime import SamplingParams

        self._check_open()
        if self.threaded:
            raise RuntimeError("warmup() runs the engine on the calling thread: call it before starting the "
                               "game, with GameRuntime(threaded=False), or let the first lines warm the cache")
        chosen = [self.characters[c] if isinstance(c, str) else c for c in (characters or self.characters.values())]
        before = self.engine.stats()["prompt_tokens"] - self.engine.stats()["cached_tokens"]
        handles = []
        for c in chosen:
            # the system message as it starts every prompt of this character
            prefix = render_chat(self.engine.tokenizer, [{"role": "system", "content": c.system}],
                                 add_generation_prompt=False)
            handles.append(self.engine.submit(prefix, SamplingParams(max_tokens=1, temperature=0.0),
                                              persona=c.name, adapter=c.adapter))
            if pin:
                self.engine.hint(c.name, pin=True)
        while not all(h.done for h in handles):
            self.engine.step()
        return self.engine.stats()["prompt_tokens"] - self.engine.stats()["cached_tokens"] - before

    # -- the frame -------------------------------------------------------------------------

    def update(self, budget_ms: float = 4.0) -> int:
        """Once per frame: run the engine for at most about `budget_ms` (not in threaded mode), then fire
        the callbacks of what was generated, on this thread. Returns the callbacks fired."""
        if self.worker_error is not None:
            raise RuntimeError(f"the runtime's worker thread failed: {self.worker_error!r}") from self.worker_error
        if not self.threaded and self._live:
            self.engine.pump(budget_ms)
            self._collect()
        return self._fire()

    def _fire(self, wait: float = 0.0) -> int:
        """Fire the callbacks of what was generated; with `wait`, first block up to that many seconds for one."""
        fired = 0
        while True:
            try:
                line, piece = self._events.get(timeout=wait) if wait and not fired else self._events.get_nowait()
            except queue.Empty:
                return fired
            fired += 1
            if piece is not None:
                if line.on_token is not None:
                    line.on_token(line, piece)
            else:
                line.done = True
                if line.on_done is not None:
                    line.on_done(line)

    @property
    def busy(self) -> bool:
        """Whether any line is still being generated or has callbacks waiting."""
        return bool(self._live) or not self._commands.empty() or not self._events.empty()

    def stats(self) -> dict:
        return self.engine.stats()

    def close(self) -> None:
        """Cancel every unfinished line (their `on_done` fires now) and stop the worker; `say` then raises."""
        if self.closed:
            return
        self.closed = True
        if self._worker is not None:
            self._wake.set()
            self._worker.join()
        while not self._commands.empty():  # lines the worker never took: submit them only to cancel them
            cmd = self._commands.get_nowait()
            if cmd[0] == "submit":
                self._submit(*cmd[1:])
        for line in list(self._live):
            line._handle.cancel()
        self._collect()
        self._fire()

    def __enter__(self) -> GameRuntime:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- inside ----------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeError("the runtime is closed")

    def _say(self, character: Character, text: str, schema, on_token, on_done, max_tokens, temperature, top_p,
             seed) -> Line:
        from swarm.runtime import SamplingParams

        self._check_open()
        o = self.defaults
        params = SamplingParams(max_tokens=max_tokens or o["max_tokens"],
                                temperature=o["temperature"] if temperature is None else temperature,
                                top_p=o["top_p"] if top_p is None else top_p, seed=seed)
        ids = fit_prompt(self.engine, character.messages(text), params.max_tokens)
        # what submit would refuse is refused now, on the game's thread, not later in the worker (the engine
        # keeps a schema's compiled grammar for the submit)
        self.engine.check(ids, params, adapter=character.adapter, schema=schema)
        line = Line(character, text, on_token, on_done)
        if self.threaded:
            self._commands.put(("submit", line, ids, params, schema))
            self._wake.set()
        else:
            self._submit(line, ids, params, schema)
        return line

    def _submit(self, line: Line, ids: list[int], params, schema) -> None:
        c = line.character
        line._handle = self.engine.submit(ids, params, persona=c.name, adapter=c.adapter, schema=schema)
        self._live.append(line)

    def _cancel(self, line: Line) -> None:
        if self.threaded:
            self._commands.put(("cancel", line))
            self._wake.set()
        elif line._handle is not None and not line._handle.done:
            line._handle.cancel()
            self._collect()

    def _collect(self) -> None:
        """Turn new tokens into text pieces and finished requests into endings (queued for the callbacks)."""
        still = []
        for line in self._live:
            handle = line._handle
            line.tokens = len(handle.token_ids)
            piece = handle.new_text()
            if piece:
                self._events.put((line, piece))
                line.text += piece
            if not handle.done:
                still.append(line)
                continue
            out = handle.result()
            line.text, line.finish_reason, line.value, line.error = out.text, out.finish_reason, out.value, out.error
            if out.finish_reason in ("stop", "length"):
                line.character.remember(line.prompt_text, out.text)
            self._events.put((line, None))
        self._live = still

    def _work(self) -> None:
        """The worker thread (threaded mode): take commands, step while there is work, collect."""
        try:
            while not self.closed:
                while True:
                    try:
                        cmd = self._commands.get_nowait()
                    except queue.Empty:
                        break
                    if cmd[0] == "submit":
                        self._submit(*cmd[1:])
                    elif cmd[1]._handle is not None and not cmd[1]._handle.done:
                        cmd[1]._handle.cancel()
                if self._live:
                    self.engine.step()
                    self._collect()
                else:
                    self._wake.wait(0.05)
                    self._wake.clear()
        except BaseException as e:  # reported on the game thread by the next update()
            self.worker_error = e
