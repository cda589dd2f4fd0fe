"""OpenAIModel: a simulation on any OpenAI-compatible server, tested against swarm's own (`swarm serve --http`)
on a free loopback port: a village run through it at temperature 0 is the in-process run, event for event."""

from __future__ import annotations

import logging
import socket
from types import SimpleNamespace

import openai
import pytest

from swarm.cli import main
from swarm.model import EngineModel
from swarm.openai_model import ModelUnavailable, OpenAIModel, parse_spec
from swarm.recorder import read_log
from swarm.runtime import Engine, EngineConfig
from swarm.simulation import Simulation

from .http_serving import ServedHttp

try:  # the HTTP library the openai client is built on, whose requests and responses its errors hold
    import httpx2 as http_lib
except ImportError:  # its releases before 3
    import httpx as http_lib

TICKS = 8


def new_engine() -> Engine:
    return Engine.from_pretrained("swarm-tiny", config=EngineConfig(kv_cache_tokens=1 << 16, kv_tier_memory=0))


@pytest.fixture(scope="module")
def served():
    server = ServedHttp(new_engine(), "swarm-tiny")
    yield server
    server.close()


def village_events(model, tmp_path, name: str, ticks: int = TICKS) -> list[tuple]:
    sim = Simulation.from_scenario("village", model=model, seed=5, record=tmp_path / f"{name}.jsonl")
    sim.run(ticks)
    sim.close()
    _, events = read_log(tmp_path / f"{name}.jsonl")
    return [(e.tick, e.kind, e.actor, e.text) for e in events]


def test_a_village_through_the_http_server_at_temperature_0_is_the_in_process_run(served, tmp_path):
    local = village_events(EngineModel(new_engine(), temperature=0), tmp_path, "local")
    remote_model = OpenAIModel(served.url, "swarm-tiny", temperature=0)
    assert remote_model.swarm and remote_model.adapters()  # the extensions are on; the personas' adapters served
    remote = village_events(remote_model, tmp_path, "remote")
    assert sum(kind in ("say", "tell") for _, kind, _, _ in local) >= 3  # the run says things, it is not all waits
    assert remote == local
    stats = remote_model.stats()
    assert stats["requests"] > 0 and stats.get("errors", 0) == 0 and stats.get("invalid", 0) == 0
    assert 0 < stats["cached_tokens"] < stats["prompt_tokens"]  # prompt_cache_key keyed the personas' prefixes
    remote_model.close()


def test_swarm_run_takes_an_openai_model_on_the_command_line(served, tmp_path, capsys):
    log = tmp_path / "run.jsonl"
    assert main(["run", "village", "--ticks", "2", "--model", f"openai:{served.url}#swarm-tiny",
                 "--record", str(log), "--headless"]) == 0
    header, events = read_log(log)
    assert header["model"] == f"openai:{served.url}#swarm-tiny"
    assert any(e.kind == "join" for e in events)


def test_specs_and_servers_that_are_wrong_say_so():
    assert parse_spec("openai:http://h:8000/v1#org/model-1") == ("http://h:8000/v1", "org/model-1")
    assert parse_spec("openai:https://h/v1") == ("https://h/v1", None)
    with pytest.raises(ValueError, match="http"):
        parse_spec("openai:h:8000#m")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ModelUnavailable, match="could not list the models"):
        OpenAIModel(f"http://127.0.0.1:{port}/v1", "m", max_retries=0, timeout=5)


def test_an_unknown_model_names_what_the_server_serves(served):
    with pytest.raises(ValueError, match="no model 'gpt-9'.*swarm-tiny"):
        OpenAIModel(served.url, "gpt-9")
    assert OpenAIModel(served.url).model == "swarm-tiny"  # the one base model; its adapters name it as parent


# -- what a server gets wrong: the server's answers replaced at the client's boundary -----------------------------


def reply(content: str, finish_reason: str = "stop"):
    message = SimpleNamespace(content=content)
    return SimpleNamespace(choices=[SimpleNamespace(message=message, finish_reason=finish_reason)], usage=None)


def test_an_answer_that_is_not_an_action_is_a_fail_event_with_the_reason_not_a_crash(served, monkeypatch):
    model = OpenAIModel(served.url, "swarm-tiny", temperature=0)
    answers = iter([reply('{"type": "dance"}'), reply('{"type": "say", "text": "Hel', "length")])
    monkeypatch.setattr(model.client.chat.completions, "create", lambda **kw: next(answers, reply("not json")))
    sim = Simulation.from_scenario("village", model=model, seed=5, agents=3)
    fails = [e.text for e in sim.tick() if e.kind == "fail"]
    sim.close()
    assert len(fails) == 3, fails
    assert any("not a valid action" in f for f in fails) and any("cut off (length)" in f for f in fails)
    assert model.stats()["invalid"] == 3


def test_a_tick_whose_turns_all_miss_the_server_stops_the_run_one_that_misses_some_goes_on(served, monkeypatch):
    model = OpenAIModel(served.url, "swarm-tiny", temperature=0)
    real = model.client.chat.completions.create
    request = http_lib.Request("POST", served.url + "/chat/completions")
    lost = openai.APIConnectionError(request=request)
    monkeypatch.setattr(model.client.chat.completions, "create", lambda **kw: (_ for _ in ()).throw(lost))
    sim = Simulation.from_scenario("village", model=model, seed=5, agents=3)
    with pytest.raises(ModelUnavailable, match="no turn of this tick reached"):
        sim.tick()
    sim.close()

    calls = iter(range(100))

    def every_other(**kw):
        if next(calls) % 2:
            raise openai.BadRequestError("refused", response=http_lib.Response(400, request=request),
                                         body={"error": {"message": "the prompt is too long"}})
        return real(**kw)

    monkeypatch.setattr(model.client.chat.completions, "create", every_other)
    sim = Simulation.from_scenario("village", model=model, seed=5, agents=3)
    fails = [e.text for e in sim.tick() if e.kind == "fail"]
    sim.close()
    assert fails and all("refused the turn: 400 the prompt is too long" in f for f in fails), fails


def test_a_server_without_embeddings_is_said_once_and_words_stand_in(served, monkeypatch, caplog):
    model = OpenAIModel(served.url, "swarm-tiny")
    assert model.embed(["the mill"]).shape == (1, new_engine().config.hidden_size)  # the server's own
    model = OpenAIModel(served.url, "swarm-tiny")
    request = http_lib.Request("POST", served.url + "/embeddings")
    missing = openai.NotFoundError("no", response=http_lib.Response(404, request=request),
                                   body={"error": {"message": "this model does not embed"}})
    monkeypatch.setattr(model.client.embeddings, "create", lambda **kw: (_ for _ in ()).throw(missing))
    with caplog.at_level(logging.WARNING, logger="swarm.openai"):
        a, b = model.embed(["the mill"]), model.embed(["the mill", "the river"])
    assert a.shape == (1, 256) and b.shape == (2, 256) and (a[0] == b[0]).all()
    assert [r.getMessage() for r in caplog.records].count(caplog.records[0].getMessage()) == 1
    assert "this model does not embed" in caplog.records[0].getMessage()
