"""swarm.game: character handles on one shared engine, a frame budget, callbacks on the game's thread."""

import threading

import msgspec
import pytest

from swarm.agents.actions import Say
from swarm.agents.persona import Persona
from swarm.game import GameRuntime
from swarm.runtime import Engine, PromptTooLongError, SamplingParams, SchemaError

WORLD = "A small village: a tavern, a square and a mill."


@pytest.fixture(scope="module")
def engine():
    return Engine.from_pretrained("swarm-tiny")


def runtime(engine, **kw) -> GameRuntime:
    engine.scheduler.cache.clear()  # each test starts with a cold prefix cache
    return GameRuntime(engine=engine, world=WORLD, **kw)


def drain(rt: GameRuntime, budget_ms: float = 4.0, frames: int = 2000) -> int:
    n = 0
    while rt.busy and n < frames:
        rt.update(budget_ms)
        n += 1
    assert not rt.busy, "lines did not finish"
    return n


def test_lines_stream_on_the_calling_thread_and_match_the_engine(engine):
    rt = runtime(engine)
    mira = rt.character("Mira", Persona(name="Mira", role="innkeeper", traits="warm, nosy"))
    bram = rt.character("Bram", "miller")
    pieces, threads, ended = {"Mira": [], "Bram": []}, set(), []

    def on_token(line, piece):
        pieces[line.character.name].append(piece)
        threads.add(threading.get_ident())

    lines = [c.say("Any news today?", on_token=on_token, on_done=ended.append, temperature=0.0, max_tokens=24)
             for c in (mira, bram)]
    assert not any(line.done for line in lines)  # say() only queues
    frames = drain(rt)
    assert frames > 1 and sorted(ended, key=id) == sorted(lines, key=id)
    assert threads == {threading.get_ident()}
    for line in lines:
        assert line.done and line.finish_reason in ("stop", "length")
        assert "".join(pieces[line.character.name]) == line.text
        # the same prompt straight through the engine gives the same greedy tokens
        ids = engine.tokenizer.encode(engine.tokenizer.apply_chat_template(
            [{"role": "system", "content": line.character.system}, {"role": "user", "content": "Any news today?"}]))
        [ref] = engine.generate([ids], SamplingParams(max_tokens=24, temperature=0.0))
        assert ref.text == line.text and line.tokens == len(ref.token_ids)
    assert mira.history == [{"role": "user", "content": "Any news today?"},
                            {"role": "assistant", "content": lines[0].text}]


def test_threaded_mode_runs_the_model_elsewhere_and_calls_back_in_update(engine):
    rt = runtime(engine, threaded=True)
    steppers, callers = set(), set()
    real_step = engine.step

    def step(*a, **kw):
        steppers.add(threading.get_ident())
        return real_step(*a, **kw)

    engine.step = step
    try:
        line = rt.character("Mira", "innkeeper").say(
            "Hello", on_token=lambda _l, _p: callers.add(threading.get_ident()),
            on_done=lambda _l: callers.add(threading.get_ident()), temperature=0.0, max_tokens=16)
        line.result(timeout=60)
    finally:
        engine.step = real_step
        rt.close()
    assert line.done and line.text
    assert callers == {threading.get_ident()}
    assert steppers and threading.get_ident() not in steppers


def test_schema_lines_decode_to_the_action_type(engine):
    rt = runtime(engine)
    line = rt.character("Bram", "miller").say("Tell me about the mill.", schema=Say, seed=3, max_tokens=200)
    drain(rt)
    assert line.finish_reason == "stop" and isinstance(line.value, Say)
    assert msgspec.json.decode(line.text, type=Say) == line.value


def test_seeded_sampling_repeats(engine):
    texts = []
    for _ in range(2):
        rt = runtime(engine)
        line = rt.character("Wren", "baker").say("What is for sale?", temperature=0.9, seed=11, max_tokens=20)
        drain(rt)
        texts.append(line.text)
    assert texts[0] == texts[1]


def test_cancel_ends_the_line_and_frees_its_blocks(engine):
    rt = runtime(engine)
    done = []
    line = rt.character("Mira", "innkeeper").say("Hello", on_done=done.append, max_tokens=64)
    rt.update(1)
    line.cancel()
    drain(rt)
    assert done == [line] and line.finish_reason == "cancelled"
    engine.scheduler.cache.clear()
    assert engine.pool.num_used == 0  # nothing but the prefix cache held its blocks
    assert rt.character("Mira").history == []  # a cancelled line is not remembered


def test_warmup_prefills_persona_prompts_once(engine):
    rt = runtime(engine)
    cast = [rt.character(n, r) for n, r in (("Mira", "innkeeper"), ("Bram", "miller"), ("Wren", "baker"))]
    first = rt.warmup()
    assert first > 0
    assert rt.warmup() == len(cast)  # all cached now (the last token is computed again for its logits)
    line = cast[0].say("Hi", max_tokens=4)
    drain(rt)
    system = len(engine.tokenizer.encode(engine.tokenizer.apply_chat_template(
        [{"role": "system", "content": cast[0].system}], add_generation_prompt=False)))
    assert line._handle.result().cached_tokens >= system - engine.pool.block_size


def test_a_frame_budget_spreads_a_long_prompt_over_frames(engine):
    rt = runtime(engine)
    rt.warmup([rt.character("Sage", "storyteller")])  # steps to fit the step cost on
    line = rt.character("Sage").say("Tell the story of the mill. " * 40, max_tokens=4)
    rt.update(0.5)
    assert not line.done and 0 < line._handle._request.num_computed < len(line._handle._request.tokens)
    drain(rt)
    assert line.done


def test_bad_requests_fail_on_the_callers_thread_and_nothing_is_queued(engine):
    rt = runtime(engine)
    with pytest.raises(ValueError, match="unknown adapter 'bard'"):
        rt.character("Pip", Persona(name="Pip", adapter="bard"))
    pip = rt.character("Pip", "bard")
    with pytest.raises(PromptTooLongError):
        pip.say("word " * 5000)
    with pytest.raises(SchemaError):
        pip.say("hi", schema=object)
    assert not rt.busy
    rt.close()
    with pytest.raises(RuntimeError, match="closed"):
        pip.say("hi")


def test_a_schema_that_cannot_fit_max_tokens_fails_on_the_callers_thread(engine):
    rt = runtime(engine, threaded=True)  # the engine's own submit runs in the worker thread
    with pytest.raises(SchemaError, match="does not fit max_tokens=2"):
        rt.character("Pip", "bard").say("hi", schema=Say, max_tokens=2)
    assert not rt.busy
    rt.close()


def test_a_character_on_an_adapter(engine):
    rt = runtime(engine)
    gossip = rt.character("Tilda", Persona(name="Tilda", role="washerwoman", adapter="gossip"))
    line = gossip.say("Heard anything?", temperature=0.0, max_tokens=12)
    drain(rt)
    assert line.done and line._handle._request.adapter == "gossip"


def test_close_cancels_what_is_unfinished_and_tells_the_caller(engine):
    for threaded in (False, True):
        rt = runtime(engine, threaded=threaded)
        ended = []
        lines = [rt.character(n, "villager").say("Hello", on_done=ended.append, max_tokens=64)
                 for n in ("Ada", "Bren")]
        rt.close()
        assert sorted(ended, key=id) == sorted(lines, key=id)
        assert all(line.done and line.finish_reason in ("cancelled", "stop", "length") for line in lines)
        assert not rt.busy


def test_the_old_names_still_import():
    from swarm.embed import Runtime

    assert Runtime is GameRuntime


def test_engine_check_refuses_what_submit_would_and_queues_nothing(engine):
    from swarm.runtime import PromptTooLongError, SamplingParams, SchemaError

    ids = engine.tokenizer.encode("hello")
    engine.check(ids, SamplingParams(max_tokens=4))
    with pytest.raises(ValueError, match="unknown adapter 'nope'"):
        engine.check(ids, adapter="nope")
    with pytest.raises(PromptTooLongError):
        engine.check(ids, SamplingParams(max_tokens=engine.max_context))
    with pytest.raises(SchemaError):
        engine.check(ids, SamplingParams(stop=["x"]), schema=dict)
    assert not engine.scheduler.has_work
