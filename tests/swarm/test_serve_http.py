"""`swarm serve --http`: the OpenAI API on the engine, tested with the official `openai` client (and plain
`http.client` for what that client will not send) against a real server on a free loopback port."""

from __future__ import annotations

import base64
import json
import random
import re
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import msgspec
import numpy as np
import openai
import pytest

from swarm.runtime import Engine, EngineConfig, JsonSchema, SamplingParams
from swarm.runtime.chat import fit_prompt, render_chat
from swarm.runtime.grammar import closed_json_schema
from swarm.serve.http.app import MAX_BODY

from .http_serving import ServedHttp, next_event, open_stream, request

CHAT = "/v1/chat/completions"
MIRA = [{"role": "system", "content": "You are Mira, the innkeeper of the Red Stag. You gossip about everyone."},
        {"role": "user", "content": "Who came into the tavern last night, and what did they say about the mill?"}]
# A long value that still fits max_tokens=1900 (one that could not is refused at submit): requests that must
# still be running when a test acts.
LONG = {"type": "json_schema", "json_schema": {"name": "long", "schema": {
    "type": "object", "properties": {"story": {"type": "string", "minLength": 1800}}, "required": ["story"]}}}


class Mood(msgspec.Struct):
    """Fields deliberately not in alphabetical order: the answer must keep them in this order."""

    zeal: int
    mood: Literal["calm", "wary"]
    note: str


@pytest.fixture(scope="module")
def engine():
    return Engine.from_pretrained("swarm-tiny", config=EngineConfig(kv_cache_tokens=1 << 16, kv_tier_memory=0))


@pytest.fixture(scope="module")
def served(engine):
    server = ServedHttp(engine, "swarm-tiny")
    yield server
    server.close()


@pytest.fixture(scope="module")
def client(served):
    return served.client()


def greedy(served, prompt, max_tokens: int, **options):
    """What the engine itself generates for `prompt` at temperature 0 (on its thread, between the server's steps)."""
    params = SamplingParams(max_tokens=max_tokens, temperature=0, stop=options.pop("stop", ()))
    return served.call(lambda engine: engine.generate(prompt, params, **options)[0])


def wait_for(check, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


# -- models ----------------------------------------------------------------------------------


def test_models_lists_the_base_model_and_each_adapter_by_its_name(client, engine):
    cards = {m.id: m for m in client.models.list()}
    assert list(cards) == ["swarm-tiny", *sorted(engine.adapters())] and len(cards) == 8
    assert cards["swarm-tiny"].parent is None and cards["swarm-tiny"].max_model_len == engine.max_context
    assert cards["gossip"].parent == "swarm-tiny" and cards["gossip"].owned_by == "swarm"
    assert client.models.retrieve("gossip").id == "gossip"
    with pytest.raises(openai.NotFoundError) as e:
        client.models.retrieve("gpt-4o")
    assert e.value.code == "model_not_found" and "it serves 'swarm-tiny', 'engineer'" in e.value.message


# -- chat completions ------------------------------------------------------------------------


def test_chat_at_temperature_0_is_the_engines_own_generate_on_the_rendered_prompt(served, client, engine):
    r = client.chat.completions.create(model="swarm-tiny", messages=MIRA, max_tokens=24, temperature=0)
    expected = greedy(served, render_chat(engine.tokenizer, MIRA), 24)
    choice = r.choices[0]
    assert choice.message.content == expected.text and choice.message.role == "assistant"
    assert choice.finish_reason == expected.finish_reason and r.model == "swarm-tiny" and r.id.startswith("chatcmpl-")
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (len(expected.prompt_token_ids),
                                                                  len(expected.token_ids))
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_an_adapters_model_id_generates_with_that_adapter(served, client, engine):
    r = client.chat.completions.create(model="gossip", messages=MIRA, max_tokens=16, temperature=0)
    prompt = render_chat(engine.tokenizer, MIRA)
    assert r.choices[0].message.content == greedy(served, prompt, 16, adapter="gossip").text
    assert r.model == "gossip"


def test_a_json_schema_is_enforced_in_its_property_order_as_the_engine_compiles_the_type(served, client, engine):
    schema = closed_json_schema(Mood)  # what a client sends for a msgspec type: fields in order, objects closed
    fmt = {"type": "json_schema", "json_schema": {"name": "Mood", "schema": schema, "strict": True}}
    r = client.chat.completions.create(model="swarm-tiny", messages=MIRA, max_tokens=60, temperature=0,
                                       response_format=fmt)
    text = r.choices[0].message.content
    assert text == greedy(served, render_chat(engine.tokenizer, MIRA), 60, schema=Mood).text
    assert list(json.loads(text)) == ["zeal", "mood", "note"] and msgspec.json.decode(text, type=Mood)


def test_json_object_mode_is_the_grammar_of_any_json_object(served, client, engine):
    r = client.chat.completions.create(model="swarm-tiny", messages=MIRA, max_tokens=40, temperature=0,
                                       response_format={"type": "json_object"})
    prompt, any_object = render_chat(engine.tokenizer, MIRA), JsonSchema({"type": "object"}, keep_order=True)
    assert r.choices[0].message.content == greedy(served, prompt, 40, schema=any_object).text
    assert r.choices[0].message.content.startswith("{")  # (swarm-tiny writes long keys: it is cut off at 40 tokens)


def test_fit_history_leaves_out_old_exchanges_as_an_in_process_simulation_does(served, client, engine):
    history = [MIRA[0]]
    for i in range(60):
        history += [{"role": "user", "content": f"Tell me about the miller's cousin number {i} and the harvest."},
                    {"role": "assistant", "content": f"Cousin {i} sold rye at the market and argued with the guard."}]
    history.append(MIRA[1])
    assert len(engine.tokenizer.encode(render_chat(engine.tokenizer, history))) > engine.max_context
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="swarm-tiny", messages=history, max_tokens=16, temperature=0)
    assert e.value.code == "context_length_exceeded" and e.value.param == "messages"
    r = client.chat.completions.create(model="swarm-tiny", messages=history, max_tokens=16, temperature=0,
                                       extra_body={"fit_history": True})
    expected = greedy(served, fit_prompt(engine, history, 16), 16)
    assert r.choices[0].message.content == expected.text
    assert r.usage.prompt_tokens == len(expected.prompt_token_ids) <= engine.max_context - 16


def test_a_streamed_chat_sends_the_role_the_pieces_the_finish_and_the_usage(client):
    messages = [*MIRA[:1], {"role": "user", "content": "And the blacksmith? " * 6}]
    whole = client.chat.completions.create(model="swarm-tiny", messages=messages, max_tokens=20, temperature=0)
    chunks = list(client.chat.completions.create(model="swarm-tiny", messages=messages, max_tokens=20, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    first, *middle, finish, usage = chunks
    assert first.choices[0].delta.role == "assistant" and first.choices[0].delta.content == ""
    assert "".join(c.choices[0].delta.content for c in middle) == whole.choices[0].message.content
    assert len(middle) > 3 and all(c.choices[0].finish_reason is None for c in middle)
    assert finish.choices[0].finish_reason == whole.choices[0].finish_reason and finish.choices[0].delta.content is None
    assert usage.choices == [] and usage.usage.completion_tokens == whole.usage.completion_tokens
    # the same prompt again: its leading full blocks come from the prefix cache
    assert usage.usage.prompt_tokens_details.cached_tokens >= 16
    assert whole.usage.prompt_tokens_details.cached_tokens < usage.usage.prompt_tokens_details.cached_tokens
    assert len({c.id for c in chunks}) == 1


# -- text completions ------------------------------------------------------------------------


def test_text_completions_plain_streamed_and_from_token_ids(served, client, engine):
    expected = greedy(served, "The guard at the gate", 12, stop=("\n",))
    r = client.completions.create(model="swarm-tiny", prompt="The guard at the gate", max_tokens=12, temperature=0,
                                  stop="\n")
    assert r.choices[0].text == expected.text and r.choices[0].finish_reason == expected.finish_reason
    assert r.object == "text_completion" and r.id.startswith("cmpl-")
    ids = engine.tokenizer.encode("The guard at the gate")
    assert client.completions.create(model="swarm-tiny", prompt=ids, max_tokens=12, temperature=0,
                                     stop=["\n"]).choices[0].text == expected.text
    pieces = list(client.completions.create(model="swarm-tiny", prompt="The guard at the gate", max_tokens=12,
                                            temperature=0, stop="\n", stream=True))
    assert "".join(p.choices[0].text for p in pieces) == expected.text
    assert pieces[-1].choices[0].finish_reason == expected.finish_reason


def test_seeded_sampling_repeats_and_max_tokens_defaults_to_16(client):
    ask = lambda seed: client.completions.create(model="swarm-tiny", prompt="Once", temperature=1.0, top_p=0.9,
                                                 seed=seed)
    a, b = ask(7), ask(7)
    assert a.choices[0].text == b.choices[0].text and a.usage.completion_tokens <= 16


# -- many clients ----------------------------------------------------------------------------


def test_32_concurrent_clients_share_the_engines_steps(served, client, engine):
    prompts = [[{"role": "user", "content": f"Villager {i} asks about the well."}] for i in range(32)]
    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(lambda m: client.chat.completions.create(model="swarm-tiny", messages=m,
                                                                         max_tokens=16, temperature=0), prompts))
    batches = served.stats()["recent_batch_seqs"]
    assert max(batches) >= 16, batches  # requests that arrived together ran in one batch
    expected = served.call(lambda e: e.generate([render_chat(e.tokenizer, m) for m in prompts],
                                                SamplingParams(max_tokens=16, temperature=0)))
    assert [a.choices[0].message.content for a in answers] == [c.text for c in expected]


# -- errors ----------------------------------------------------------------------------------

HI = [{"role": "user", "content": "hi"}]
BAD = [  # (path, body, status, param, code)
    (CHAT, b"{not json", 400, None, None),
    (CHAT, b"[]", 400, None, None),
    (CHAT, {"model": "swarm-tiny"}, 400, None, None),
    (CHAT, {"model": "swarm-tiny", "messages": HI, "max_tokens": "ten"}, 400, "max_tokens", None),
    (CHAT, {"model": "swarm-tiny", "messages": HI, "max_tokens": 0}, 400, "max_tokens", None),
    (CHAT, {"model": "swarm-tiny", "messages": HI, "temperature": 3}, 400, "temperature", None),
    (CHAT, {"model": "swarm-tiny", "messages": []}, 400, "messages", None),
    (CHAT, {"model": "swarm-tiny", "messages": [{"role": "tool", "content": "x"}]}, 400, "messages[0].role", None),
    (CHAT, {"model": "swarm-tiny", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
     400, "messages[0].content[0].type", None),
    (CHAT, {"model": "swarm-tiny", "messages": HI, "n": 2}, 400, "n", "unsupported_parameter"),
    (CHAT, {"model": "swarm-tiny", "messages": HI, "tools": [{"type": "function"}]}, 400, "tools",
     "unsupported_parameter"),
    (CHAT, {"model": "swarm-tiny", "messages": HI, "logprobs": True}, 400, "logprobs", "unsupported_parameter"),
    (CHAT, {"model": "swarm-tiny", "messages": HI, "frequency_penalty": 0.5}, 400, "frequency_penalty",
     "unsupported_parameter"),
    (CHAT, {"model": "swarm-tiny", "messages": HI, "max_tokens": 5, "max_completion_tokens": 6}, 400,
     "max_completion_tokens", None),
    (CHAT, {"model": "swarm-tiny", "messages": HI, "stream_options": {"include_usage": True}}, 400, "stream_options",
     None),
    (CHAT, {"model": "gpt-4o", "messages": HI}, 404, "model", "model_not_found"),
    (CHAT, {"model": "swarm-tiny", "messages": HI, "stop": ["."], "response_format": {"type": "json_object"}}, 400,
     "stop", None),
    (CHAT, {"model": "swarm-tiny", "messages": HI, "response_format": {"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"type": "object", "properties": {"a": {"type": "nope"}}}}}}, 400, "response_format",
     "invalid_schema"),
    (CHAT, {"model": "swarm-tiny", "messages": HI, "response_format": {"type": "json_schema", "json_schema": {
        "name": "x", "schema": json.loads('{"items":' * 70 + "{}" + "}" * 70)}}}, 400, "response_format", None),
    (CHAT, {"model": "swarm-tiny", "messages": [{"role": "user", "content": "tavern " * 3000}]}, 400, "messages",
     "context_length_exceeded"),
    (CHAT, {"model": "swarm-tiny", "messages": HI, "max_tokens": 5000}, 400, "messages", "context_length_exceeded"),
    ("/v1/completions", {"model": "swarm-tiny", "prompt": []}, 400, "prompt", None),
    ("/v1/completions", {"model": "swarm-tiny", "prompt": ["a", "b"]}, 400, "prompt", "unsupported_parameter"),
    ("/v1/completions", {"model": "swarm-tiny", "prompt": [1, "b"]}, 400, "prompt", None),
    ("/v1/completions", {"model": "swarm-tiny", "prompt": [999999]}, 400, "prompt", None),
    ("/v1/completions", {"model": "swarm-tiny", "prompt": "x", "echo": True}, 400, "echo", "unsupported_parameter"),
    ("/v1/embeddings", {"model": "swarm-tiny", "input": [[1, 2]]}, 400, "input", "unsupported_parameter"),
    ("/v1/embeddings", {"model": "swarm-tiny", "input": "x", "dimensions": 7}, 400, "dimensions",
     "unsupported_parameter"),
    ("/v1/embeddings", {"model": "nope", "input": "x"}, 404, "model", "model_not_found"),
]


@pytest.mark.parametrize("path, body, status, param, code", BAD)
def test_a_bad_request_gets_an_openai_error_with_its_status_and_the_server_goes_on(served, path, body, status, param,
                                                                                   code):
    got, answer, _ = request(served.port, "POST", path, body)
    assert got == status, answer
    error = answer["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"] in ("invalid_request_error",
                                                                                   "not_found_error")
    assert (error["param"], error["code"]) == (param, code), error
    assert "\n" not in error["message"] and "Traceback" not in error["message"] and len(error["message"]) < 400


def test_routes_methods_and_bodies_the_server_does_not_take(served):
    status, answer, _ = request(served.port, "GET", "/v1/nothing")
    assert status == 404 and "Not Found" in answer["error"]["message"]
    status, answer, _ = request(served.port, "GET", CHAT)
    assert status == 405 and answer["error"]["type"] == "invalid_request_error"
    status, answer, _ = request(served.port, "POST", CHAT, b"", {"Content-Length": str(MAX_BODY + 1)})
    assert status == 413 and answer["error"]["code"] == "request_too_large"


def test_the_server_survives_malformed_bodies(served, client):
    valid = json.dumps({"model": "swarm-tiny", "messages": HI, "max_tokens": 2, "temperature": 0.5,
                        "stop": ["x"], "response_format": {"type": "text"}, "stream": False})
    odd = ["null", "[]", "{}", "-1", "1e400", '"x"', "true", '{"a":[[[[[[]]]]]]}', "[" * 5000, '"\\ud800"']
    rng = random.Random(26)
    bodies = []
    for _ in range(60):
        text = list(valid)
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(text))
            kind = rng.random()
            if kind < 0.3:
                del text[i]
            elif kind < 0.6:
                text.insert(i, rng.choice('{}[]",:0\\ae\x00'))
            else:
                text[i] = rng.choice(odd) if text[i] in ",:" else rng.choice('{}[]"0')
        bodies.append("".join(text).encode("utf-8", "surrogatepass"))
    bodies += [b"\xff\xfe", b"\x00" * 10, json.dumps({"model": "swarm-tiny", "messages": HI,
                                                     "temperature": float("nan")}).encode()]
    for body in bodies:
        status, answer, _ = request(served.port, "POST", CHAT, body)
        assert status in (200, 400, 404), (body, status, answer)
        assert status == 200 or isinstance(answer["error"]["message"], str)
    assert client.chat.completions.create(model="swarm-tiny", messages=HI, max_tokens=2).choices


# -- clients that go away --------------------------------------------------------------------


def test_a_client_that_disconnects_mid_stream_has_its_request_cancelled_and_its_kv_freed(served):
    before = served.stats()
    conn, response = open_stream(served.port, CHAT, {"model": "swarm-tiny", "messages": MIRA, "max_tokens": 1900,
                                                     "response_format": LONG})
    assert response.status == 200 and response.getheader("content-type").startswith("text/event-stream")
    assert json.loads(next_event(response))["choices"][0]["delta"]["role"] == "assistant"
    for _ in range(3):
        assert json.loads(next_event(response))["choices"][0]["delta"]["content"]
    assert served.stats()["running"] == 1
    conn.close()
    wait_for(lambda: served.stats()["running"] == 0)
    after = served.stats()
    assert after["tokens_generated"] - before["tokens_generated"] < 1000  # it stopped, far short of its 1,900
    assert served.http.worker.pending == 0
    # the blocks it held are free again, but for those the prefix cache keeps (full blocks of what it computed)
    assert after["kv_blocks_used"] - before["kv_blocks_used"] <= after["kv_blocks_cached"] - before["kv_blocks_cached"]


def test_a_client_that_disconnects_while_waiting_for_a_whole_answer_is_cancelled_too(served):
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=10)
    body = {"model": "swarm-tiny", "messages": MIRA, "max_tokens": 1900, "response_format": LONG}
    conn.request("POST", CHAT, json.dumps(body).encode(), {"Content-Type": "application/json"})
    before = served.stats()
    wait_for(lambda: served.stats()["running"] == 1)
    conn.close()
    wait_for(lambda: served.stats()["running"] == 0)
    assert served.stats()["tokens_generated"] - before["tokens_generated"] < 1000  # far short of its 1,900
    assert served.http.worker.pending == 0


# -- keys, embeddings, health, metrics -------------------------------------------------------


def test_an_api_key_is_asked_for_on_the_v1_routes(served):
    served.http.app.api_key = "sekret"
    try:
        status, answer, _ = request(served.port, "GET", "/v1/models")  # no Authorization header at all
        assert status == 401 and "wants an API key" in answer["error"]["message"]
        with pytest.raises(openai.AuthenticationError, match="not this server's"):
            served.client(api_key="wrong").models.list()
        status, answer, _ = request(served.port, "POST", CHAT, {"model": "swarm-tiny", "messages": HI})
        assert status == 401 and answer["error"]["code"] == "invalid_api_key"
        assert served.client(api_key="sekret").models.list().data[0].id == "swarm-tiny"
        assert request(served.port, "GET", "/health")[0] == 200  # health checks and scrapers need no key
    finally:
        served.http.app.api_key = None


def test_swarm_serve_takes_the_api_key_from_swarm_api_key(monkeypatch):
    from swarm.cli import build_parser

    monkeypatch.setenv("SWARM_API_KEY", "from-env")
    assert build_parser().parse_args(["serve", "--http", "127.0.0.1:0"]).api_key == "from-env"
    assert build_parser().parse_args(["serve", "--http", "127.0.0.1:0", "--api-key", "k"]).api_key == "k"


def test_embeddings_are_the_engines_own_as_floats_or_base64(served, client):
    texts = ["The mill burned down.", "Fire at the mill!", ""]
    expected = served.call(lambda engine: engine.embed(texts).numpy())
    r = client.embeddings.create(model="swarm-tiny", input=texts, encoding_format="float")
    assert np.allclose(np.array([d.embedding for d in r.data]), expected, atol=1e-6)
    assert [d.index for d in r.data] == [0, 1, 2] and r.usage.prompt_tokens > 0
    status, answer, _ = request(served.port, "POST", "/v1/embeddings", {"model": "gossip", "input": texts[0],
                                                                        "encoding_format": "base64"})
    vector = np.frombuffer(base64.b64decode(answer["data"][0]["embedding"]), dtype="<f4")
    assert status == 200 and np.array_equal(vector, expected[0])


def test_health_and_metrics_in_the_prometheus_text_format(served, client):
    assert request(served.port, "GET", "/health")[:2] == (200, {"status": "ok"})
    client.completions.create(model="swarm-tiny", prompt="The well", max_tokens=3)
    status, text, headers = request(served.port, "GET", "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
    sample = re.compile(r'(swarm_[a-z_]+(?:\{[a-z]+="[^"]*"(?:,[a-z]+="[^"]*")*\})?) (\S+)')
    samples = {}
    for line in text.splitlines():
        if not line.startswith("#"):
            name, value = sample.fullmatch(line).groups()
            samples[name] = float(value)
    assert "# TYPE swarm_generated_tokens_total counter" in text and samples["swarm_generated_tokens_total"] >= 3
    assert samples["swarm_requests_running"] == 0 and samples["swarm_kv_blocks"] == 1 << 12
    assert samples['swarm_http_requests_total{path="/v1/completions",status="200"}'] >= 1
    assert samples['swarm_expert_tokens_total{layer="0",expert="0"}'] >= 0
