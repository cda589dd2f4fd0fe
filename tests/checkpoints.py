"""One check for every scenario: a run saved, loaded and continued equals a run that never stopped."""

from __future__ import annotations

from collections.abc import Callable

from swarm import ScriptedModel, Simulation
from swarm.recorder import read_log
from swarm.scenario import load_module


def prompt_recorder(spec: str, prompts: list) -> ScriptedModel:
    """The scenario's scripted policy, writing down every prompt it is shown."""
    scripted = load_module(spec).policy

    def policy(turn):
        prompts.append(turn.request.messages)
        return scripted(turn)

    return ScriptedModel(policy, ref="scripted")


def assert_resumes_exactly(tmp_path, spec: str, *, seed: int, before: int, after: int, abandoned: int = 3,
                           on_load: Callable[[Simulation], None] | None = None, **options) -> Simulation:
    """Run `spec` for `before + after` ticks in one go; run it again, save at `before`, go on `abandoned` ticks
    (a branch the checkpoint discards), load and run `after` more. Both logs must hold the same events, the
    model must be shown the same prompts after the save, and the discarded branch is kept aside, not lost.
    `on_load(sim)` checks the loaded simulation before it runs; the resumed simulation is returned."""
    whole, whole_prompts = tmp_path / "whole.jsonl", []
    sim = Simulation.from_scenario(spec, model=prompt_recorder(spec, whole_prompts), seed=seed, record=whole,
                                   **options)
    sim.run(before + after)
    sim.close()

    parts = tmp_path / "parts.jsonl"
    sim = Simulation.from_scenario(spec, model="scripted", seed=seed, record=parts, **options)
    sim.run(before)
    sim.save(tmp_path / "ckpt")
    turns_before = sim.counters["turns"]
    sim.run(abandoned)
    sim.close()
    resumed_prompts: list = []
    resumed = Simulation.load(tmp_path / "ckpt", model=prompt_recorder(spec, resumed_prompts))
    assert resumed.tick_count == before
    if on_load is not None:
        on_load(resumed)
    resumed.run(after)
    resumed.close()

    assert list(read_log(parts)[1]) == list(read_log(whole)[1])
    assert resumed_prompts == whole_prompts[turns_before:]
    [aside] = tmp_path.glob("parts.jsonl.after-*")
    assert aside.stat().st_size > 0
    return resumed
