"""Finding and building scenarios: a bundled one by name (`village` is `swarm.scenarios.village`) or
any Python file that defines `build(sim, **options)`.

A scenario's `build` adds places, things, agents, action types, handlers, per-tick hooks
and metrics to a fresh `Simulation`. It keeps any state of its own in `sim.state`, so
checkpoints capture it: plain data in the dict `sim.state` starts as, or a typed state, a
`msgspec.Struct` that `build` puts there (`sim.state = Town(...)`; a checkpoint's saved fields
are converted back to its type). Everything else it sets up is rebuilt by calling `build`
again when a checkpoint is loaded.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import pkgutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import msgspec

from swarm.runtime.errors import SwarmError


class ScenarioError(SwarmError):
    """A scenario could not be found or loaded, or its code raised."""


@dataclass(frozen=True)
class ScenarioRef:
    """How a checkpoint names a scenario: a bundled name or a file path, and the options it was built with."""

    spec: str
    options: dict[str, Any] = field(default_factory=dict)


def bundled() -> list[str]:
    import swarm.scenarios

    return sorted(m.name for m in pkgutil.iter_modules(swarm.scenarios.__path__) if not m.name.startswith("_"))


def load_module(spec: str) -> ModuleType:
    path = Path(spec)
    if spec.endswith(".py") or path.suffix or "/" in spec:
        if not path.is_file():
            raise ScenarioError(f"no scenario file {spec}")
        name = f"swarm_scenario_{abs(hash(str(path.resolve())))}"
        if name in sys.modules:  # built once per process: its classes stay the same objects
            return sys.modules[name]
        module_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module  # dataclasses and msgspec look the module up while the file runs
        try:
            module_spec.loader.exec_module(module)
        except Exception as e:
            del sys.modules[name]
            raise ScenarioError(f"scenario file {spec} raised while loading: {type(e).__name__}: {e}") from e
        return module
    if spec not in bundled():
        names = ", ".join(bundled()) or "none yet"
        raise ScenarioError(f"unknown scenario {spec!r}; bundled scenarios: {names} (or pass a path to a .py file)")
    return importlib.import_module(f"swarm.scenarios.{spec}")


def builder(module: ModuleType, spec: str) -> Callable[..., None]:
    build = getattr(module, "build", None)
    if not callable(build):
        raise ScenarioError(f"scenario {spec} defines no build(sim, **options) function")
    return build


def check_options(build: Callable[..., None], options: dict[str, Any], spec: str) -> dict[str, Any]:
    """Keep the options `build` takes (None means "not given"); an option it cannot take is an error."""
    options = {k: v for k, v in options.items() if v is not None}
    params = inspect.signature(build).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return options
    unknown = sorted(set(options) - set(params))
    if unknown:
        raise ScenarioError(f"scenario {spec} does not take {', '.join(unknown)} (it takes: {describe_options(build)})")
    return options


def describe_options(build: Callable[..., None]) -> str:
    """`build`'s options for an error message: "agents (default 12), gathering (default '18:30')"."""
    params = list(inspect.signature(build).parameters.values())[1:]  # the first is the simulation
    named = [p for p in params if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]
    return ", ".join(p.name if p.default is inspect.Parameter.empty else f"{p.name} (default {p.default!r})"
                     for p in named) or "no options"


def option_value(text: str) -> Any:
    """An option's value as typed on a command line: JSON when it parses (numbers, true and false, null,
    lists, quoted strings), else the text as it is (`19:00`, `square`)."""
    try:
        return msgspec.json.decode(text)
    except msgspec.DecodeError:
        return text


def parse_settings(pairs: list[str], build: Callable[..., None], spec: str) -> dict[str, Any]:
    """`NAME=VALUE` pairs (`swarm run --set`) as options of scenario `spec`, whose builder is `build`. Each
    value is `option_value(VALUE)`, checked against the type of the option's default: an int default takes
    a whole number, a float default any number, a bool default true or false, and a str default takes the
    text as typed (`--set code=007` stays "007"); an option without a default, or defaulting to None, takes
    any value. A malformed pair, a name given twice, a name `build` does not take or a value of the wrong
    type is a ScenarioError that says which and what the scenario takes."""
    params = inspect.signature(build).parameters
    open_ended = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    options: dict[str, Any] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        name = name.strip()
        if not sep or not name.isidentifier():
            raise ScenarioError(f"--set takes NAME=VALUE (e.g. --set agents=30), got {pair!r}")
        if name in options:
            raise ScenarioError(f"--set {name} is given twice: give each option once")
        if name not in params and not open_ended or name == next(iter(params), None):
            raise ScenarioError(f"scenario {spec} has no option {name!r}; its options: {describe_options(build)}")
        default = params[name].default if name in params else None
        options[name] = _typed(name, text, default, spec)
    return options


def _typed(name: str, text: str, default: Any, spec: str) -> Any:
    """`text` as the value of option `name`, whose default is `default` (see parse_settings)."""
    value = option_value(text)
    if default is inspect.Parameter.empty or default is None:
        return value
    if isinstance(default, str):
        return value if isinstance(value, str) else text
    if isinstance(default, bool):
        ok, kind = isinstance(value, bool), "true or false"
    elif isinstance(default, int):
        ok, kind = isinstance(value, int) and not isinstance(value, bool), "a whole number"
    elif isinstance(default, float):
        ok, kind = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
    else:
        return value
    if not ok:
        raise ScenarioError(f"scenario {spec}'s option {name} takes {kind} (default {default!r}), got {text!r}")
    return value


def run_build(sim, ref: ScenarioRef) -> None:
    build = builder(load_module(ref.spec), ref.spec)
    options = check_options(build, ref.options, ref.spec)
    try:
        build(sim, **options)
    except SwarmError:
        raise
    except Exception as e:
        raise ScenarioError(f"scenario {ref.spec}: build() raised {type(e).__name__}: {e}") from e


def scripted_model(spec: str):
    """The scenario's scripted policy as the model (`--model scripted`)."""
    from swarm.model import ScriptedModel

    policy = getattr(load_module(spec), "policy", None)
    if not callable(policy):
        raise ScenarioError(f"scenario {spec} defines no policy(turn) function, so it cannot run scripted")
    return ScriptedModel(policy, ref="scripted")
