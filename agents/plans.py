"""An agent's plan: a graph of goals and the sub-goals (steps) that reach them.

Edges run goal -> sub-goal; siblings keep the order they were added in. A
*step* is an open (pending or active) node with no open children: the thing
to work on now. Steps may carry a due tick, which the simulation's planner
uses to wake the agent. Marking every child of a goal done marks the goal
done; a failed step asks for a re-plan, which the model answers with a
`PlanUpdate` that `replace_steps` puts in place of the unfinished steps.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import networkx as nx

__all__ = ["OPEN", "STATUSES", "Plan", "Step"]

STATUSES = ("pending", "active", "done", "failed")
OPEN = ("pending", "active")
_MARKS = {"pending": "[ ]", "active": "[>]", "done": "[x]", "failed": "[!]"}


@dataclass(frozen=True)
class Step:
    """A snapshot of one goal or step of a plan."""

    id: int
    text: str
    status: str
    due: int | None
    parent: int | None


class Plan:
    """Goals and steps in a `networkx.DiGraph` (node attributes: text, status, due, order)."""

    def __init__(self):
        self.graph = nx.DiGraph()
        self.replan_reason: str | None = None
        self._next_id = 0
        self._summary: tuple[float, bool] | None = None  # (next due tick of a pending step, any step open)

    def __len__(self) -> int:
        return len(self.graph)

    # -- building -------------------------------------------------------------------------

    def add_goal(self, text: str, parent: int | None = None, due: int | None = None) -> int:
        """Add a goal (a sub-goal of `parent`, or a top-level one); returns its id. Re-opens a done parent."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError("a goal needs non-empty text")
        if due is not None and not isinstance(due, int):
            raise ValueError(f"due is a tick (int) or None, got {due!r}")
        if parent is not None:
            self._node(parent)
        node = self._next_id
        self._next_id += 1
        self.graph.add_node(node, text=text, status="pending", due=due, order=node)
        if parent is not None:
            self.graph.add_edge(parent, node)
            p = parent
            while p is not None and self.graph.nodes[p]["status"] == "done":
                self.graph.nodes[p]["status"] = "active"
                p = self._parent(p)
        self._summary = None
        return node

    def set_status(self, node: int, status: str) -> None:
        """Set a goal's status; done on every child marks the parent done, and a failure asks for a re-plan."""
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}; expected one of {STATUSES}")
        attrs = self._node(node)
        attrs["status"] = status
        if status == "done":
            self._settle(self._parent(node))
        elif status == "failed":
            self.invalidate(f"failed: {attrs['text']}")
        self._summary = None

    def replace_steps(self, parent: int, texts: list[str]) -> list[int]:
        """Drop `parent`'s unfinished and failed sub-goals (with theirs) and add `texts` as its new steps, in
        order; clears the re-plan request. Returns the new ids."""
        self._node(parent)
        for child in list(self.graph.successors(parent)):
            if self.graph.nodes[child]["status"] != "done":
                self.graph.remove_nodes_from([child, *nx.descendants(self.graph, child)])
        ids = [self.add_goal(t, parent) for t in texts]
        if not ids:
            self._settle(parent)
        self.replan_reason = None
        self._summary = None
        return ids

    def invalidate(self, reason: str) -> None:
        """Ask for a re-plan (the agent sends a plan request on its next turn)."""
        self.replan_reason = reason or "re-plan requested"

    @property
    def needs_replan(self) -> bool:
        return self.replan_reason is not None

    def prune(self, keep: int = 2) -> None:
        """Forget finished top-level goals (and their steps) but the `keep` newest, so a long run stays small."""
        finished = [n for n in self._roots() if self.graph.nodes[n]["status"] not in OPEN]
        for root in finished[: max(0, len(finished) - keep)]:
            self.graph.remove_nodes_from([root, *nx.descendants(self.graph, root)])
        self._summary = None

    # -- reading --------------------------------------------------------------------------

    def get(self, node: int) -> Step:
        a = self._node(node)
        return Step(node, a["text"], a["status"], a["due"], self._parent(node))

    def top_goal(self) -> int | None:
        """The first open top-level goal, or None."""
        return next((n for n in self._roots() if self.graph.nodes[n]["status"] in OPEN), None)

    def next_step(self, tick: float) -> Step | None:
        """The first step (in order) that is not scheduled after `tick`, or None."""
        for node in self._steps():
            due = self.graph.nodes[node]["due"]
            if due is None or due <= tick:
                return self.get(node)
        return None

    def due(self, tick: float) -> bool:
        """Whether a pending step's due tick has come."""
        return self.next_due_tick() is not None and self.next_due_tick() <= tick

    def next_due_tick(self) -> int | None:
        """The earliest due tick of the pending steps, or None when none has one."""
        due = self._summarise()[0]
        return None if due == math.inf else int(due)

    def has_open_steps(self) -> bool:
        return self._summarise()[1]

    def describe(self, max_lines: int = 6) -> str:
        """The open goals and their steps, one per line and indented, for a prompt."""
        lines = []
        for root in self._roots():
            if self.graph.nodes[root]["status"] in OPEN:
                lines += self._lines(root, 0)
        if not lines:
            return "(no plan)"
        if len(lines) > max_lines:
            lines = lines[: max_lines - 1] + [f"... ({len(lines) - max_lines + 1} more)"]
        return "\n".join(lines)

    # -- checkpoints ----------------------------------------------------------------------

    def to_state(self) -> dict:
        """Node-link data in plain types (the layout of `networkx.node_link_data`), plus the re-plan state."""
        return {
            "directed": True, "multigraph": False, "graph": {},
            "nodes": [{"id": n, **a} for n, a in self.graph.nodes(data=True)],
            "edges": [{"source": u, "target": v} for u, v in self.graph.edges],
            "next_id": self._next_id, "replan_reason": self.replan_reason,
        }

    @classmethod
    def from_state(cls, state: dict) -> Plan:
        plan = cls()
        for node in state["nodes"]:
            attrs = {k: v for k, v in node.items() if k != "id"}
            if attrs.get("status") not in STATUSES:
                raise ValueError(f"goal {node['id']} has unknown status {attrs.get('status')!r}")
            plan.graph.add_node(node["id"], **attrs)
        plan.graph.add_edges_from((e["source"], e["target"]) for e in state["edges"])
        plan._next_id, plan.replan_reason = state["next_id"], state["replan_reason"]
        return plan

    # -- internals ------------------------------------------------------------------------

    def _node(self, node: int) -> dict:
        if node not in self.graph:
            raise ValueError(f"unknown goal id {node!r}")
        return self.graph.nodes[node]

    def _parent(self, node: int) -> int | None:
        return next(iter(self.graph.predecessors(node)), None)

    def _children(self, node: int) -> list[int]:
        return sorted(self.graph.successors(node), key=lambda n: self.graph.nodes[n]["order"])

    def _roots(self) -> list[int]:
        return sorted((n for n, d in self.graph.in_degree if d == 0), key=lambda n: self.graph.nodes[n]["order"])

    def _settle(self, node: int | None) -> None:
        # done on every child makes the goal done, and so on up
        while node is not None:
            children = self._children(node)
            if not children or any(self.graph.nodes[c]["status"] != "done" for c in children):
                return
            self.graph.nodes[node]["status"] = "done"
            node = self._parent(node)

    def _steps(self) -> Iterator[int]:
        """Open nodes without open children, depth first in order (finished goals' subtrees are skipped)."""

        def walk(nodes: list[int]) -> Iterator[int]:
            for n in nodes:
                if self.graph.nodes[n]["status"] in OPEN:
                    open_children = [c for c in self._children(n) if self.graph.nodes[c]["status"] in OPEN]
                    if open_children:
                        yield from walk(open_children)
                    else:
                        yield n

        return walk(self._roots())

    def _summarise(self) -> tuple[float, bool]:
        # cached until the next change, so the planner's per-tick questions are O(1)
        if self._summary is None:
            due, any_open = math.inf, False
            for node in self._steps():
                any_open = True
                a = self.graph.nodes[node]
                if a["status"] == "pending" and a["due"] is not None:
                    due = min(due, a["due"])
            self._summary = (due, any_open)
        return self._summary

    def _lines(self, node: int, depth: int) -> list[str]:
        a = self.graph.nodes[node]
        due = f" (due tick {a['due']})" if a["due"] is not None and a["status"] in OPEN else ""
        lines = ["  " * depth + f"{_MARKS[a['status']]} {a['text']}{due}"]
        if a["status"] in OPEN:
            for child in self._children(node):
                lines += self._lines(child, depth + 1)
        return lines
