"""The engine's `stats()` in the Prometheus text format (version 0.0.4), for `GET /metrics`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PREFIX = "swarm_"

# stats() key -> (metric name, type, help). Keys not listed (lists, labels) are left out.
ENGINE_METRICS: dict[str, tuple[str, str, str]] = {
    "steps": ("engine_steps_total", "counter", "batched engine steps run"),
    "tokens_generated": ("generated_tokens_total", "counter", "tokens sampled"),
    "tokens_computed": ("computed_tokens_total", "counter", "prefill and decode tokens through the model"),
    "prompt_tokens": ("prompt_tokens_total", "counter", "prompt tokens admitted"),
    "cached_tokens": ("cached_prompt_tokens_total", "counter", "prompt tokens served from the prefix cache"),
    "recomputed_tokens": ("recomputed_tokens_total", "counter", "tokens computed again after their KV was evicted"),
    "preemptions": ("preemptions_total", "counter", "requests preempted for KV memory"),
    "busy_s": ("engine_busy_seconds_total", "counter", "seconds spent in engine steps"),
    "running": ("requests_running", "gauge", "requests in the running batch"),
    "waiting": ("requests_waiting", "gauge", "requests waiting to be admitted"),
    "tokens_per_s": ("generated_tokens_per_second", "gauge", "tokens sampled per busy second, since start"),
    "recent_tokens_per_s": ("recent_generated_tokens_per_second", "gauge", "the same over the last 64 steps"),
    "mean_batch_seqs": ("mean_batch_sequences", "gauge", "sequences per step, since start"),
    "prefix_cache_hit_rate": ("prefix_cache_hit_rate", "gauge", "cached over admitted prompt tokens"),
    "kv_pool_use": ("kv_pool_use", "gauge", "share of KV blocks in use"),
    "kv_blocks_total": ("kv_blocks", "gauge", "KV blocks in the pool"),
    "kv_blocks_used": ("kv_blocks_used", "gauge", "KV blocks in use (running requests and the prefix cache)"),
    "kv_blocks_cached": ("kv_blocks_cached", "gauge", "KV blocks the prefix cache holds"),
    "kv_tier_blocks_total": ("kv_tier_blocks", "gauge", "slots of the second KV tier"),
    "kv_tier_blocks_used": ("kv_tier_blocks_used", "gauge", "slots of the second KV tier in use"),
    "kv_blocks_restored": ("kv_blocks_restored_total", "counter", "KV blocks copied back from the second tier"),
    "kv_blocks_dropped": ("kv_blocks_dropped_total", "counter", "KV blocks evicted for good"),
}


def render(stats: Mapping, requests: Mapping[tuple[str, int], int]) -> str:
    """The exposition text: every engine metric `stats` has, the expert load per layer and expert, and the HTTP
    requests answered per (path, status)."""
    lines: list[str] = []
    for key, (name, kind, help) in ENGINE_METRICS.items():
        if isinstance(stats.get(key), (int, float)):
            _family(lines, name, kind, help, [("", stats[key])])
    load = stats.get("expert_load") or []
    samples = [(f'{{layer="{i}",expert="{e}"}}', n) for i, row in enumerate(load) for e, n in enumerate(row)]
    if samples:
        _family(lines, "expert_tokens_total", "counter", "tokens routed to each expert of each MoE layer", samples)
    samples = [(f'{{path="{path}",status="{status}"}}', n) for (path, status), n in sorted(requests.items())]
    _family(lines, "http_requests_total", "counter", "HTTP requests answered, by path and status", samples)
    return "\n".join(lines) + "\n"


def _family(lines: list[str], name: str, kind: str, help: str, samples: Iterable[tuple[str, float]]) -> None:
    lines += [f"# HELP {PREFIX}{name} {help}", f"# TYPE {PREFIX}{name} {kind}"]
    lines += [f"{PREFIX}{name}{labels} {_number(value)}" for labels, value in samples]


def _number(value: float) -> str:
    return str(int(value)) if isinstance(value, bool) or float(value).is_integer() else repr(float(value))
