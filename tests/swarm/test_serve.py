"""`swarm serve` over the in-process bus: streaming, encodings, batching, bad input and shutdown.

Over a real broker (MQTT v5, v3.1.1 with reply_to, the Node.js client) see test_serve_mqtt.py.
"""

import asyncio
import logging
import time

import msgspec
import pytest

from swarm.bus import open_bus
from swarm.runtime import Engine, EngineConfig, SamplingParams
from swarm.runtime.random_model import tiny_config, write_random_model
from swarm.serve import Server, info_topic, status_topic
from swarm.serve.protocol import Info

from .serving import ask, text_of

GREEDY = {"temperature": 0, "max_tokens": 12}
MOOD = {"type": "object", "properties": {"mood": {"enum": ["calm", "wary"]}, "n": {"type": "integer", "maximum": 9}},
        "required": ["mood", "n"], "additionalProperties": False}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_random_model(tmp_path_factory.mktemp("m"), tiny_config(vocab_size=384, max_position_embeddings=256))


@pytest.fixture
async def served(folder):
    """A server for a fresh engine on a local bus: yields (bus, server)."""
    engine = Engine.from_pretrained(folder, config=EngineConfig(kv_cache_tokens=4096))
    async with open_bus("local", presence=status_topic("v")) as bus:
        server = await Server(engine, bus, "v", model="tiny-random").start()
        yield bus, server
        await server.close(grace=1)


async def test_tokens_stream_then_done_with_the_engines_text(served):
    bus, server = served
    replies = await ask(bus, "v", {"id": "q1", "prompt": "The guard", **GREEDY})
    *tokens, done = replies
    assert len(tokens) > 1 and all(r == {"id": "q1", "done": False, "token": r["token"]} for r in tokens)
    expected = server.engine.generate("The guard", SamplingParams(max_tokens=12, temperature=0))[0]
    assert done == {"id": "q1", "done": True, "text": expected.text, "finish_reason": expected.finish_reason,
                    "value": None, "budget_closed": False, "prompt_tokens": len(expected.prompt_token_ids),
                    "completion_tokens": len(expected.token_ids), "cached_tokens": 0}
    assert text_of(replies) == expected.text


async def test_msgpack_requests_get_msgpack_replies(served):
    bus, _ = served
    replies = await ask(bus, "v", {"id": 7, "prompt": "The guard", **GREEDY}, format="msgpack")
    json_replies = await ask(bus, "v", {"id": 7, "prompt": "The guard", **GREEDY}, format="json")
    assert replies[-1]["id"] == 7 and replies[-1]["text"] == json_replies[-1]["text"]
    raw = await bus.subscribe("client/raw", type=bytes)
    # the two requests run in one batch, so their replies interleave; a token that decodes to no text yet
    # (end of sequence, half a UTF-8 character) sends no token reply, so read up to both final replies
    for request in (msgspec.msgpack.encode({"id": "m", "prompt": "x", "max_tokens": 1}),
                    b' \n{"id": "j", "prompt": "x", "max_tokens": 1}'):
        await bus.publish("swarm/v/runtime/generate", request, reply_to="client/raw")
    seen, done = [], set()
    while len(done) < 2:
        wire = (await raw.get(timeout=30)).payload
        is_json = wire[:1] == b"{"  # msgpack encodes these replies as maps: 0x8N
        reply = msgspec.json.decode(wire) if is_json else msgspec.msgpack.decode(wire)
        assert is_json or 0x80 <= wire[0] <= 0x8F
        seen.append((reply["id"], is_json))
        if reply["done"]:
            done.add(reply["id"])
    assert set(seen) == {("m", False), ("j", True)}, seen


async def test_chat_messages_get_the_personas_system_message(served):
    bus, server = served
    persona = {"name": "Mira", "role": "innkeeper", "traits": "gossips", "goals": ["sell ale"]}
    messages = [{"role": "user", "content": "Who is in the tavern?"}]
    done = (await ask(bus, "v", {"persona": persona, "messages": messages, **GREEDY}))[-1]
    system = ("You are Mira, innkeeper.\nTraits: gossips.\nGoals: sell ale.\n\n"
              "Stay in character. Each turn, answer with exactly one action as JSON.")
    prompt = server.engine.tokenizer.apply_chat_template([{"role": "system", "content": system}, *messages])
    assert prompt.startswith("<|im_start|>system\nYou are Mira, innkeeper.")
    assert done["text"] == server.engine.generate(prompt, SamplingParams(max_tokens=12, temperature=0))[0].text
    # a persona's own template; a plain name; messages that bring their own system message
    plain = "You are Mira.\n\nStay in character. Each turn, answer with exactly one action as JSON."
    own = [{"role": "system", "content": "Be brief."}, *messages]
    cases = [({"name": "Mira", "system_prompt": "{name} pours ale."}, messages, "Mira pours ale."),
             ("Mira", messages, plain), (persona, own, "Be brief.")]
    for spec, msgs, system in cases:
        chat = server.engine.tokenizer.apply_chat_template([{"role": "system", "content": system}, *messages])
        done = (await ask(bus, "v", {"persona": spec, "messages": msgs, **GREEDY}))[-1]
        expected = server.engine.generate(chat, SamplingParams(max_tokens=12, temperature=0))[0]
        assert (done["text"], done["prompt_tokens"]) == (expected.text, len(expected.prompt_token_ids)), spec


async def test_a_json_schema_gives_a_decoded_value(served):
    bus, _ = served
    replies = await ask(bus, "v", {"id": 1, "prompt": "Mood:", "schema": MOOD, "max_tokens": 40, "seed": 3})
    done = replies[-1]
    assert done["finish_reason"] == "stop" and done["value"] == msgspec.json.decode(done["text"])
    assert done["value"]["mood"] in ("calm", "wary") and text_of(replies) == done["text"]
    quiet = await ask(bus, "v", {"id": 2, "prompt": "Mood:", "schema": MOOD, "max_tokens": 40, "seed": 3,
                                 "stream": False})
    assert len(quiet) == 1 and quiet[0]["value"] == done["value"]  # seeded: the same value


async def test_a_value_the_model_would_not_finish_in_time_is_closed_by_the_budget(served):
    bus, _ = served
    note = {"type": "object", "properties": {"note": {"type": "string"}}, "required": ["note"],
            "additionalProperties": False}
    asks = [{"id": i, "prompt": "Note:", "schema": note, "max_tokens": 16, "temperature": 1, "seed": i}
            for i in range(8)]
    dones = [replies[-1] for replies in await asyncio.gather(*(ask(bus, "v", r) for r in asks))]
    assert all(d["finish_reason"] == "stop" and d["value"] == msgspec.json.decode(d["text"]) for d in dones), dones
    assert all(d["completion_tokens"] <= 16 for d in dones) and any(d["budget_closed"] for d in dones)
    [refused] = await ask(bus, "v", {"id": 9, "prompt": "Note:", "schema": note, "max_tokens": 3})
    assert refused["code"] == "schema" and "does not fit max_tokens=3" in refused["error"]


async def test_concurrent_requests_share_batched_steps(served):
    bus, server = served
    requests = [{"id": i, "prompt": f"The guard {i}", "max_tokens": 16, "temperature": 1, "seed": i} for i in range(12)]
    results = await asyncio.gather(*(ask(bus, "v", r) for r in requests))
    assert [r[-1]["id"] for r in results] == list(range(12))
    assert all(text_of(r) == r[-1]["text"] and r[-1]["completion_tokens"] >= 1 for r in results)
    assert server.engine.stats()["mean_batch_seqs"] > 4  # not one request after another


async def test_the_bus_keeps_flowing_while_the_engine_steps(served, frozen_heap):
    bus, server = served
    engine, step = server.engine, server.engine.step

    def slow_step():  # a big model's step: the event loop must not wait for it
        time.sleep(0.15)
        return step()

    engine.step = slow_step
    gaps, last = [], time.perf_counter()

    async def heartbeat():
        nonlocal last
        while True:
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    beat = asyncio.get_running_loop().create_task(heartbeat())
    long = asyncio.ensure_future(ask(bus, "v", {"prompt": "The guard", "max_tokens": 6, "temperature": 0}))
    await asyncio.sleep(0.05)  # the first step is running now
    start = time.perf_counter()
    error = await ask(bus, "v", {"id": "bad"})  # answered by the loop while the step runs
    assert time.perf_counter() - start < 0.1 and error[-1]["code"] == "bad_request"
    assert (await long)[-1]["completion_tokens"] == 6
    beat.cancel()
    assert max(gaps) < 0.1, max(gaps)  # six steps of 150 ms, and the loop never stalled


@pytest.mark.parametrize("request_, code, message", [
    (b"{not json", "bad_request", "not valid JSON"),
    (b"\x81\xa6prompt\xc1", "bad_request", "not valid msgpack"),
    (b"[1, 2]", "bad_request", "a request is an object"),
    ({"id": 1}, "bad_request", "exactly one of `prompt` and `messages`"),
    ({"id": 2, "prompt": "x", "messages": [{"role": "user", "content": "x"}]}, "bad_request", "exactly one"),
    ({"id": 3, "prompt": "x", "max_tokens": "many"}, "bad_request", "Expected `int`, got `str` - at `$.max_tokens`"),
    ({"id": 4, "prompt": "x", "max_tokens": 0}, "bad_request", ">= 1 - at `$.max_tokens`"),
    ({"id": 5, "prompt": "x", "temprature": 0}, "bad_request", "unknown field `temprature`"),
    ({"id": 6, "messages": [{"role": "wizard", "content": "x"}]}, "bad_request", "$.messages[0].role"),
    ({"id": 7, "prompt": ""}, "bad_request", "at least one token"),
    ({"id": 8, "prompt": "x", "persona": {"name": "Mira", "system_prompt": "{mood}"}}, "bad_request",
     "unknown placeholder {mood}"),
    ({"id": 16, "messages": [{"role": "user", "content": "x"}],
      "persona": {"name": "Mira", "system_prompt": "{name:>50000000}"}}, "bad_request", "no format spec"),
    ({"id": 17, "prompt": "ab" * 200_000}, "too_long", "400,000 characters"),  # refused before tokenizing
    ({"id": 9, "prompt": "x", "persona": {"role": "innkeeper"}}, "bad_request", "missing required field `name`"),
    ({"id": 10, "prompt": "x", "adapter": "innkeeper"}, "unknown_adapter", "unknown adapter 'innkeeper'"),
    ({"id": 11, "prompt": "x", "schema": {"type": "array", "uniqueItems": True}}, "schema", "uniqueItems"),
    ({"id": 12, "prompt": "x", "schema": {"$ref": "#/nowhere"}}, "schema", "does not exist"),
    ({"id": 13, "prompt": "x", "schema": MOOD, "stop": ["}"]}, "schema", "drop stop"),
    ({"id": 14, "prompt": "the " * 300}, "too_long", "the model's context is 256 tokens"),
    ({"id": 15, "prompt": "x", "max_tokens": 1000}, "too_long", "1000 to generate"),
    ({"id": "x" * 3, "prompt": "x", "top_p": 0}, "bad_request", "$.top_p"),
])
async def test_bad_requests_get_an_error_reply_and_the_server_goes_on(served, request_, code, message):
    bus, _ = served
    format = "msgpack" if isinstance(request_, bytes) and request_[:1] == b"\x81" else "json"
    [error] = await ask(bus, "v", request_, format=format)
    assert error["done"] is True and error["code"] == code and message in error["error"], error
    assert error["id"] == (request_.get("id") if isinstance(request_, dict) else None)
    assert (await ask(bus, "v", {"prompt": "x", "max_tokens": 2}))[-1]["finish_reason"] in ("stop", "length")


async def test_a_bad_request_without_v5_gets_its_error_on_reply_to(served):
    bus, _ = served
    [error] = await ask(bus, "v", {"id": "old-client", "prompt": 3}, v5=False)
    assert error["id"] == "old-client" and "Expected `str | null`, got `int` - at `$.prompt`" in error["error"]
    replies = await ask(bus, "v", {"id": "old-client", "prompt": "x", "max_tokens": 3, "temperature": 0}, v5=False)
    assert replies[-1]["completion_tokens"] == 3 and replies[-1]["id"] == "old-client"


async def test_a_request_with_nowhere_to_reply_is_dropped_with_a_warning(served, caplog):
    bus, server = served
    with caplog.at_level(logging.WARNING, logger="swarm.serve"):
        await bus.publish("swarm/v/runtime/generate", b'{"prompt": "x"}')
        await bus.publish("swarm/v/runtime/generate", b'{"prompt": "x", "reply_to": "a/+/b"}')
        await asyncio.sleep(0.05)
    assert server.pending == 0
    assert caplog.text.count("names no valid reply topic") == 2 and "wildcards" in caplog.text


async def test_a_schema_the_model_cannot_finish_is_an_error_reply(folder):
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models

    from swarm.runtime.tokenizer import Tokenizer

    # a vocabulary that can open a JSON string and write "a", but has no "c": no value can be finished
    vocab = {t: i for i, t in enumerate(["<pad>", "<bos>", "<eos>", '"', "a", "b"])}
    hf = HFTokenizer(models.BPE(vocab=vocab, merges=[]))
    hf.add_special_tokens(["<pad>", "<bos>", "<eos>"])
    hf.decoder = decoders.ByteFallback()
    model = Engine.from_pretrained(folder, config=EngineConfig(kv_cache_tokens=1024)).model
    engine = Engine(model, Tokenizer(hf, {"eos_token": "<eos>"}), EngineConfig(kv_cache_tokens=1024))
    async with open_bus("local") as bus, Server(engine, bus, "v"):
        replies = await ask(bus, "v", {"id": 1, "prompt": "ab", "schema": {"type": "string", "pattern": "^ac$"}})
        # refused before anything runs (the engine finds no way to finish a value), nothing streamed
        assert replies[-1]["code"] == "schema" and "no complete value" in replies[-1]["error"]
        assert text_of(replies) == ""
        assert (await ask(bus, "v", {"prompt": "ab", "max_tokens": 2}))[-1]["finish_reason"] in ("stop", "length")


async def test_shutdown_finishes_or_fails_what_is_in_flight_and_refuses_new_requests(folder):
    engine = Engine.from_pretrained(folder, config=EngineConfig(kv_cache_tokens=4096))
    step = engine.step
    engine.step = lambda: (time.sleep(0.02), step())[1]  # 20 ms steps: a 200-token request outlives the grace
    engine.eos_token_ids = []  # random weights: no early end of sequence (the lengths are what is tested)
    async with open_bus("local") as bus:
        server = await Server(engine, bus, "v").start()
        short = asyncio.ensure_future(ask(bus, "v", {"id": "short", "prompt": "x", "max_tokens": 5}))
        long = asyncio.ensure_future(ask(bus, "v", {"id": "long", "prompt": "x", "max_tokens": 200}))
        await asyncio.sleep(0.05)
        closing = asyncio.ensure_future(server.close(grace=0.5))
        await asyncio.sleep(0.01)
        [refused] = await ask(bus, "v", {"id": "late", "prompt": "x"})
        assert refused == {"id": "late", "done": True, "code": "shutting_down",
                           "error": "the server is shutting down and takes no new requests"}
        assert (await short)[-1]["finish_reason"] == "length"
        failed = (await long)[-1]
        assert failed["code"] == "shutting_down" and "before this request finished" in failed["error"]
        await closing
        assert server.pending == 0 and not engine.scheduler.has_work
        with pytest.raises(asyncio.TimeoutError):  # closed: nobody answers any more
            await ask(bus, "v", {"id": "after", "prompt": "x"}, timeout=0.2)


async def test_info_and_presence_are_retained(served):
    bus, _ = served
    info = await bus.subscribe(info_topic("v"), type=Info)
    assert (await info.get(timeout=1)).payload == Info(model="tiny-random", adapters=[], max_context=256,
                                                       generate="swarm/v/runtime/generate")
    status = await bus.subscribe(status_topic("v"))
    assert (await status.get(timeout=1)).payload["status"] == "online"


@pytest.mark.parametrize("argv, message", [
    (["--bus", "local"], "needs an MQTT broker"),
    (["--adapter", "gossip"], "--adapter takes NAME=PATH"),
    (["--device", "nope"], "--device 'nope' is not a device"),
])
def test_swarm_serve_refuses_bad_arguments_before_loading_anything(argv, message, capsys):
    from swarm.cli import main

    assert main(["serve", *argv]) == 2
    assert message in capsys.readouterr().err

