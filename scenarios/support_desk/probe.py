"""The routing probe: how well a model routes support-desk tickets, measured on the triage turns of
held-out runs exactly as the simulation serves them.

The scripted staff play held-out seeds of `support_desk` (the seeds `swarm train` keeps out of its
training data); every triage turn that may Route is kept with its request (messages, the narrowed
Route | Wait schema, persona, adapter) and the hidden truth of the tickets waiting. The model then
answers all of them in one batch through `EngineModel`, as in a simulation, and each Route is scored
against the truth of the ticket it names. A second, teacher-forced reading takes the scripted answer up
to its queue and asks which of the four queue names the model finds likeliest: whether it can read the
cue at all, without sampling noise and without the choice of ticket.
"""

from __future__ import annotations

import re
import typing
from collections import Counter
from dataclasses import dataclass

import torch

from swarm.model import EngineModel, ScriptedModel, Turn
from swarm.runtime.chat import render_chat
from swarm.simulation import Simulation
from swarm.train.demos import DemoPlan

SCENARIO = "support_desk"


@dataclass(frozen=True)
class TriageCase:
    turn: Turn  # the request as served; `EngineModel` reads its request and seed
    truth: dict[str, tuple[str, str]]  # waiting ticket id -> (category, priority)
    texts: dict[str, str]  # waiting ticket id -> the customer's text
    gold: typing.Any  # the scripted answer (a Route of the oldest waiting ticket, the only one it may name)


def heldout_seeds(count: int, heldout_every: int = 10) -> list[int]:
    """The first `count` seeds that `DemoPlan(heldout_every=...)` puts in the held-out split."""
    plan = DemoPlan((SCENARIO,), heldout_every=heldout_every)
    seeds, s = [], 0
    while len(seeds) < count:
        if plan.split(s) == "heldout":
            seeds.append(s)
        s += 1
    return seeds


def triage_cases(seeds: list[int], ticks: int = 40, adapters: set[str] = frozenset(),
                 limit: int | None = None) -> list[TriageCase]:
    """Triage turns that may Route, from support-desk runs played by the scripted policy. `adapters` are
    the ones the probed model serves, so personas get theirs as in a simulation on that model."""
    from swarm.scenarios.support_desk import policy

    cases: list[TriageCase] = []

    class Recorder(ScriptedModel):
        def decide(self, turns):
            values = super().decide(turns)
            for t, value in zip(turns, values, strict=True):
                st = t.sim.state
                if st.roles.get(t.agent.id) == "triage" and t.request.kind == "act" and \
                        getattr(value, "__struct_config__", None) and value.__struct_config__.tag == "route":
                    waiting = [st.tickets[i] for i in st.inbox[t.agent.id]]
                    cases.append(TriageCase(t, {w.id: (w.category, w.priority) for w in waiting},
                                            {w.id: w.text for w in waiting}, value))
            return values

        def adapters(self):
            return set(adapters)

    for seed in seeds:
        sim = Simulation.from_scenario(SCENARIO, model=Recorder(policy, ref="scripted"), seed=seed)
        for _ in range(ticks):
            sim.tick()
            if limit is not None and len(cases) >= limit:
                break
        sim.close()
        if limit is not None and len(cases) >= limit:
            return cases[:limit]
    return cases


def routing_probe(engine, cases: list[TriageCase], temperature: float = 0.7) -> dict:
    """The model's answers to `cases`, sampled as a simulation samples them, scored (see `score`), the
    teacher-forced queue choice, and in-context copying of the tickets' texts (`copy_probe`)."""
    answers = EngineModel(engine, temperature=temperature).decide([c.turn for c in cases])
    texts = list(dict.fromkeys(t for c in cases for t in c.texts.values()))[:20]
    return {"temperature": temperature, **score(cases, [getattr(a, "value", None) for a in answers]),
            **queue_choice(engine, cases), **copy_probe(engine, texts)}


def score(cases: list[TriageCase], values: list) -> dict:
    """Queue and priority accuracy of the Routes in `values` (each scored against the ticket it names),
    a confusion table (truth -> queue chosen), and accuracy by how the ticket is worded."""
    from swarm.scenarios.support_desk.tickets import CATEGORIES, CUE_RE, REASSURED

    counts: Counter[str] = Counter()
    confusion = {c: dict.fromkeys(CATEGORIES, 0) for c in CATEGORIES}
    by_wording: dict[str, Counter] = {}
    for case, value in zip(cases, values, strict=True):
        if getattr(value, "ticket", None) not in case.truth or not hasattr(value, "queue"):
            continue
        category, priority = case.truth[value.ticket]
        counts["routed"] += 1
        counts["queue"] += value.queue == category
        counts["priority"] += value.priority == priority
        confusion[category][value.queue] += 1
        text = case.texts[value.ticket]
        wording = ("opener" if REASSURED.search(text) else
                   "side remark" if sum(bool(r.search(text)) for r in CUE_RE.values()) > 1 else "plain")
        by_wording.setdefault(wording, Counter()).update(n=1, queue=value.queue == category)
    routed = max(counts["routed"], 1)
    return {"cases": len(cases), "routed": counts["routed"], "chance": 1 / len(CATEGORIES),
            "queue_accuracy": counts["queue"] / routed, "priority_accuracy": counts["priority"] / routed,
            "queue_accuracy_by_wording": {w: {"n": c["n"], "accuracy": c["queue"] / c["n"]}
                                          for w, c in sorted(by_wording.items())},
            "confusion": confusion}


@torch.no_grad()
def queue_choice(engine, cases: list[TriageCase]) -> dict:
    """Teacher-forced: the scripted answer up to `"queue":"`, then each queue name; the likeliest of the
    four is the model's choice. Returns its accuracy and the mean probability (renormalised over the four)
    of the right queue."""
    from swarm.scenarios.support_desk import CATEGORIES

    right, p_right = 0, 0.0
    for case in cases:
        r = case.turn.request
        head = render_chat(engine.tokenizer, r.messages) + re.sub(r'("queue":")[a-z]+".*', r"\1", _json(case.gold))
        options = [engine.tokenizer.encode(head + c) for c in CATEGORIES]
        common = 0  # a name's first token may merge with the text before it: score from where they differ
        while all(len(o) > common for o in options) and len({o[common] for o in options}) == 1:
            common += 1
        if all(len(o) == common + 1 for o in options):  # one token each: one forward pass answers all four
            logp = engine.logits(options[0][:common], adapter=r.adapter)[-1].log_softmax(-1)  # [V]
            scores = [float(logp[o[common]]) for o in options]
        else:
            scores = []
            for o in options:
                logp = engine.logits(o[:-1], adapter=r.adapter).log_softmax(-1)  # [len - 1, V]
                scores.append(sum(float(logp[i - 1, o[i]]) for i in range(common, len(o))))
        probs = torch.tensor(scores).softmax(-1)
        truth = CATEGORIES.index(case.truth[case.gold.ticket][0])
        right += int(probs.argmax()) == truth
        p_right += float(probs[truth])
    n = max(len(cases), 1)
    return {"queue_choice_accuracy": right / n, "queue_choice_p_right": p_right / n}


@torch.no_grad()
def copy_probe(engine, texts: list[str]) -> dict:
    """In-context copying: each text twice in a row; the mean probability the model gives the second
    copy's tokens (past its first). A model that reads its context gets near 1 (it has seen every next
    token a moment ago); one that predicts from the last few tokens alone gets about what it gets the
    first time. Routing a ticket by its words needs the first kind of reading."""
    first, second = [], []
    for text in texts:
        once = engine.tokenizer.encode(text + "\n")
        ids = once + once
        logp = engine.logits(ids).log_softmax(-1)  # [len, V]
        p = [float(logp[i - 1, ids[i]].exp()) for i in range(1, len(ids))]
        first += p[1 : len(once) - 1]
        second += p[len(once) : len(ids) - 1]
    return {"copy_first_pass_p": sum(first) / max(len(first), 1),
            "copy_second_pass_p": sum(second) / max(len(second), 1)}


def _json(value) -> str:
    import msgspec

    return msgspec.json.encode(value).decode()
