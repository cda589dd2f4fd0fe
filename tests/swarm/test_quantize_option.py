"""`--quantize` on the commands that load a model (generate, run, resume, serve, worker) reaches
`Engine.from_pretrained`: the engine they run holds weights in the format asked for."""

import pytest

from swarm.cli import build_parser, main
from swarm.engine_options import engine_config
from swarm.runtime import Engine, EngineConfig
from swarm.runtime.engine import QUANTIZE
from swarm.runtime.quant import BlockLinear, BlockMoE
from swarm.simulation import Simulation


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("quantize") / "model"
    assert main(["random-model", str(out), "--family", "qwen3_moe"]) == 0
    return out


@pytest.fixture
def loaded(monkeypatch):
    """The engines the command loads."""
    engines = []
    load = Engine.from_pretrained.__func__

    def spy(cls, *args, **kwargs):
        engines.append(load(cls, *args, **kwargs))
        return engines[-1]

    monkeypatch.setattr(Engine, "from_pretrained", classmethod(spy))
    return engines


def _format(engine) -> str:
    head = engine.model.lm_head
    return head.fmt if type(head) is BlockLinear else None


def test_the_choices_are_the_engines():
    choices = next(a.choices for a in build_parser()._subparsers._group_actions[0].choices["run"]._actions
                   if a.dest == "quantize")
    assert (None, *choices) == QUANTIZE


@pytest.mark.parametrize("fmt", ["int8", "q4_0"])
def test_generate(folder, loaded, capsys, fmt):
    assert main(["generate", "hello", "--model", str(folder), "--max-tokens", "3", "--quantize", fmt]) == 0
    [engine] = loaded
    assert _format(engine) == fmt


def test_run_and_resume_keep_the_format(folder, loaded, capsys, tmp_path):
    checkpoint = tmp_path / "run.ckpt"
    args = ["village", "--headless", "--model", str(folder), "--agents", "2"]
    assert main(["run", *args, "--ticks", "1", "--quantize", "q8_0", "--checkpoint", str(checkpoint)]) == 0
    assert _format(loaded[-1]) == "q8_0" and any(isinstance(m, BlockMoE) for m in loaded[-1].model.modules())
    assert Simulation.checkpoint_info(checkpoint)["run"]["quantize"] == "q8_0"
    assert main(["resume", str(checkpoint)]) == 0  # the model loaded as the run began
    assert len(loaded) == 2 and _format(loaded[-1]) == "q8_0"


def test_serve_and_worker(folder, loaded, capsys, monkeypatch):
    async def nothing(*args, **kwargs):
        return None

    monkeypatch.setattr("swarm.serve.command.serve", nothing)
    monkeypatch.setattr("swarm.pool.command.work", nothing)
    assert main(["serve", "--model", str(folder), "--quantize", "q4_0", "--kv-memory", "16MiB"]) == 0
    assert main(["worker", "--pool", "p", "--model", str(folder), "--quantize", "int8"]) == 0
    assert [_format(e) for e in loaded] == ["q4_0", "int8"]


def test_engine_config_carries_it_and_disagreement_is_refused(folder):
    args = build_parser().parse_args(["serve", "--quantize", "q8_0"])
    assert engine_config(args) == EngineConfig(quantize="q8_0")
    assert engine_config(build_parser().parse_args(["serve"])) is None
    with pytest.raises(ValueError, match="supported"):
        EngineConfig(quantize="q5_0")
    with pytest.raises(ValueError, match="disagree"):
        Engine.from_pretrained(folder, config=EngineConfig(quantize="q8_0"), quantize="q4_0")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "village", "--quantize", "q5_0"])
