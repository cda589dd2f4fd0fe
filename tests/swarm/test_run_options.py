"""`swarm run`'s scenario options (`--set NAME=VALUE`), sampling (`--temperature`, `--top-p`) and history
(`--json`, `--history FILE.csv`), and `swarm resume` keeping them; bad input gets one clear line."""

import csv
import textwrap

import msgspec
import pytest

from swarm.cli import main
from swarm.model import EngineModel, open_model
from swarm.pool import PoolModel
from swarm.runtime import Engine
from swarm.runtime.random_model import tiny_config, write_random_model
from swarm.scenario import ScenarioError, option_value, parse_settings
from swarm.simulation import Simulation

MARKET = textwrap.dedent('''
    """Traders at a market: how many, and what they call out, are options."""
    from swarm import Persona
    from swarm.agents.actions import Say


    def policy(turn):
        return Say(text=turn.sim.state["cry"])


    def build(sim, traders: int = 3, cry: str = "fresh fish", loud: bool = False, rate: float = 0.5,
              stalls=None):
        sim.world.add_place("market")
        sim.state["cry"] = cry.upper() if loud else cry
        for i in range(traders):
            sim.add_agent(Persona(name=f"Trader {i}", role="trader"), at="market")
        sim.metric("traders")(lambda sim: len(sim.agents))
        sim.metric("rate")(lambda sim: rate)
        sim.metric("stalls")(lambda sim: stalls)
''')

OPEN = textwrap.dedent('''
    from swarm import Persona


    def build(sim, **options):
        sim.world.add_place("square")
        sim.add_agent(Persona(name="Ann"), at="square")
''')


@pytest.fixture
def market(tmp_path) -> str:
    path = tmp_path / "market.py"
    path.write_text(MARKET)
    return str(path)


def swarm(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def report_of(out: str) -> dict:
    return msgspec.json.decode(out.splitlines()[-1])


def error_line(err: str) -> str:
    """The one line `swarm` prints for bad input (no traceback)."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def test_set_gives_a_bundled_scenario_its_options_as_json_or_text(capsys):
    code, out, _ = swarm(capsys, "run", "village", "--model", "scripted", "--ticks", "2", "--headless", "--json",
                         "--set", "agents=5", "--set", "gathering=19:00")
    assert code == 0
    report = report_of(out)
    assert report["metrics"]["agents"] == 5 and "19:00" in report["metrics"]["gathering"]


def test_set_works_for_a_scenario_file_and_checks_each_options_type(capsys, market):
    code, out, _ = swarm(capsys, "run", market, "--model", "scripted", "--ticks", "1", "--headless", "--json",
                         "--set", "traders=4", "--set", "cry=007", "--set", "loud=true", "--set", "rate=1",
                         "--set", "stalls=[1, 2]")
    assert code == 0
    metrics = report_of(out)["metrics"]
    assert metrics["traders"] == 4 and metrics["rate"] == 1 and metrics["stalls"] == [1, 2]
    assert metrics["events_by_kind"]["say"] == 4


@pytest.mark.parametrize("args, message", [
    (["--set", "wares=3"], "scenario {spec} has no option 'wares'; its options: traders (default 3), cry (default "
                           "'fresh fish'), loud (default False), rate (default 0.5), stalls (default None)"),
    (["--set", "traders=many"], "scenario {spec}'s option traders takes a whole number (default 3), got 'many'"),
    (["--set", "traders=2.5"], "option traders takes a whole number (default 3), got '2.5'"),
    (["--set", "loud=yes"], "option loud takes true or false (default False), got 'yes'"),
    (["--set", "rate=fast"], "option rate takes a number (default 0.5), got 'fast'"),
    (["--set", "traders"], "--set takes NAME=VALUE (e.g. --set agents=30), got 'traders'"),
    (["--set", "=3"], "--set takes NAME=VALUE (e.g. --set agents=30), got '=3'"),
    (["--set", "sim=3"], "scenario {spec} has no option 'sim'"),
    (["--set", "traders=2", "--set", "traders=3"], "--set traders is given twice: give each option once"),
])
def test_bad_settings_are_one_clear_line(capsys, market, args, message):
    code, _, err = swarm(capsys, "run", market, "--model", "scripted", "--ticks", "1", "--headless", *args)
    assert code == 2
    assert message.format(spec=market) in error_line(err)


def test_an_option_is_given_once_and_the_simulations_own_settings_are_not_options(capsys, tmp_path):
    code, _, err = swarm(capsys, "run", "village", "--model", "scripted", "--agents", "4", "--set", "agents=5")
    assert code == 2 and "--set agents=... and --agents both give agents: give it once" in error_line(err)
    open_ended = tmp_path / "open.py"  # takes any option: swarm's own settings must still not pass as options
    open_ended.write_text(OPEN)
    code, _, err = swarm(capsys, "run", str(open_ended), "--model", "scripted", "--set", "seed=3")
    assert code == 2
    assert "--set seed: seed is a setting of the simulation itself, not a scenario option (swarm run --seed)" \
        in error_line(err)


def test_option_values_parse_as_json_else_as_text():
    assert option_value("30") == 30 and option_value("0.5") == 0.5 and option_value("true") is True
    assert option_value("[1, 2]") == [1, 2] and option_value('"a b"') == "a b" and option_value("null") is None
    assert option_value("19:00") == "19:00" and option_value("market square") == "market square"
    assert option_value("") == ""

    def build(sim, n: int = 1, name: str = "x", anything=None, needed=0.0):
        pass

    assert parse_settings(["n=2", "name=42", "anything=[3]", "needed=1"], build, "s") == \
        {"n": 2, "name": "42", "anything": [3], "needed": 1}
    with pytest.raises(ScenarioError, match="no option 'other'"):
        parse_settings(["other=1"], build, "s")


def test_json_and_csv_hold_the_history(capsys, tmp_path, market):
    path = tmp_path / "history.csv"
    code, out, err = swarm(capsys, "run", market, "--model", "scripted", "--ticks", "3", "--headless", "--json",
                           "--history", str(path))
    assert code == 0 and f"history of 3 ticks written to {path}" in err
    history = report_of(out)["history"]
    assert [row["tick"] for row in history] == [0, 1, 2] and history[0]["traders"] == 3
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(history[0])  # the columns, `tick` first
    assert rows == [{k: str(v) for k, v in row.items()} for row in history]
    code, _, err = swarm(capsys, "run", market, "--model", "scripted", "--history", str(tmp_path / "no" / "h.csv"))
    assert code == 2 and "cannot write the history to" in error_line(err) and "does not exist" in err


def test_resume_keeps_the_options_sampling_and_history_of_the_run(capsys, tmp_path, market):
    checkpoint, path = tmp_path / "run.ckpt", tmp_path / "history.csv"
    code, out, _ = swarm(capsys, "run", market, "--model", "scripted", "--ticks", "2", "--headless", "--json",
                         "--set", "traders=5", "--checkpoint", str(checkpoint), "--history", str(path))
    assert code == 0
    first = report_of(out)
    info = Simulation.checkpoint_info(checkpoint)
    assert info["scenario"]["options"] == {"traders": 5}
    assert info["run"]["temperature"] is None and info["run"]["history"] == str(path.resolve())
    path.unlink()
    code, out, err = swarm(capsys, "resume", str(checkpoint), "--headless", "--json")
    assert code == 0 and f"scenario {market} traders=5 (its build code runs)" in err
    resumed = report_of(out)
    assert resumed["metrics"]["traders"] == 5 and resumed["history"] == first["history"]
    assert path.is_file()  # written again, where the run wrote it


@pytest.mark.parametrize("args, message", [
    (["--temperature", "-1"], "argument --temperature: must be a number >= 0 (0 is greedy, 0.7 the default), got -1"),
    (["--temperature", "nan"], "argument --temperature: must be a number >= 0"),
    (["--temperature", "warm"], "argument --temperature: must be a number, got 'warm'"),
    (["--top-p", "0"], "argument --top-p: must be a number above 0 and at most 1"),
    (["--top-p", "1.5"], "argument --top-p: must be a number above 0 and at most 1"),
])
def test_sampling_out_of_range_is_refused_before_anything_runs(capsys, args, message):
    with pytest.raises(SystemExit) as exit:
        main(["run", "village", *args])
    assert exit.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("model", ["scripted", "random"])
def test_sampling_is_refused_for_models_that_do_not_sample(capsys, model):
    code, _, err = swarm(capsys, "run", "village", "--model", model, "--temperature", "0.2", "--top-p", "0.9")
    assert code == 2
    assert f"--model {model} decides turns without sampling, so --temperature and --top-p cannot apply: leave " \
           "them out" in error_line(err)


def test_sampling_reaches_the_engine_model_and_a_resumed_run(tmp_path, capsys, market, monkeypatch):
    folder = write_random_model(tmp_path / "tiny", tiny_config(vocab_size=384))
    model = open_model(str(folder), temperature=0.0, top_p=0.5)
    assert isinstance(model, EngineModel) and (model.temperature, model.top_p) == (0.0, 0.5)
    assert (open_model(str(folder)).temperature, open_model(str(folder)).top_p) == (0.7, 0.95)  # the defaults
    with pytest.raises(ValueError, match=r"top_p must be in \(0, 1\], got 2"):
        open_model(str(folder), top_p=2)
    with pytest.raises(ValueError, match="temperature must be >= 0, got -0.5"):
        EngineModel(Engine.from_pretrained(folder), temperature=-0.5)
    with pytest.raises(ValueError, match="temperature must be >= 0, got -1"):
        PoolModel("mqtt://127.0.0.1:1/pool", temperature=-1)  # before it connects anywhere
    checkpoint = tmp_path / "run.ckpt"
    code, _, err = swarm(capsys, "run", market, "--model", str(folder), "--ticks", "1", "--headless", "--set",
                         "traders=1", "--temperature", "0", "--top-p", "0.5", "--checkpoint", str(checkpoint))
    assert code == 0, err
    run = Simulation.checkpoint_info(checkpoint)["run"]
    assert (run["temperature"], run["top_p"]) == (0.0, 0.5)
    made = []
    monkeypatch.setattr("swarm.model.open_model", lambda *a, **kw: made.append(kw) or open_model(*a, **kw))
    code, _, err = swarm(capsys, "resume", str(checkpoint), "--headless")
    assert code == 0, err
    assert made == [{"temperature": 0.0, "top_p": 0.5}]
