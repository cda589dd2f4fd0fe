"""KV memory: sizes users write, a pool sized to the machine, and nonsense refused."""

import pytest
import torch

from swarm.cli import main
from swarm.runtime import Engine, SamplingParams
from swarm.runtime.block_pool import KVPool
from swarm.runtime.engine import EngineConfig
from swarm.runtime.errors import PromptTooLongError
from swarm.runtime.memory import format_size, free_memory, parse_size
from swarm.runtime.random_model import tiny_config, write_random_model


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_random_model(tmp_path_factory.mktemp("m"), tiny_config(vocab_size=384, max_position_embeddings=1024))


@pytest.mark.parametrize(("text", "expected"), [
    ("4GiB", 4 * 2**30), ("512 MiB", 512 * 2**20), ("1.5GB", 1_500_000_000), ("4096", 4096), (4096, 4096),
    ("2kib", 2048), (" 3 g ", 3_000_000_000),
])
def test_sizes_users_write(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["0", 0, -1, "-1GiB", "abc", "4XB", "GiB", "", "nan", float("nan"), True, "1e9"])
def test_nonsense_sizes_are_refused(bad):
    with pytest.raises(ValueError, match="size|positive"):
        parse_size(bad)


def test_format_size():
    assert format_size(1536) == "1.5 KiB" and format_size(3 * 2**30) == "3.0 GiB" and format_size(12) == "12 B"


def test_free_memory_is_the_machines():
    free = free_memory("cpu")
    with open("/proc/meminfo") as f:
        total = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemTotal:"))
    assert 0 < free <= total


def test_default_pool_takes_a_share_of_free_memory(folder, monkeypatch):
    monkeypatch.setattr("swarm.runtime.engine.free_memory", lambda device: 2**30)
    engine = Engine.from_pretrained(folder)
    cfg = engine.config
    per_token = KVPool.bytes_per_token(cfg.num_layers, cfg.num_kv_heads, cfg.head_dim, torch.float32)
    assert engine.pool.num_tokens == int(0.4 * 2**30) // per_token // 16 * 16
    summary = engine.memory_summary()
    assert "40% of 1.0 GiB available RAM" in summary and f"{engine.pool.num_tokens:,} tokens" in summary
    assert "contexts of 1,024 tokens" in summary
    half = Engine.from_pretrained(folder, config=EngineConfig(kv_memory_share=0.2))
    assert half.pool.num_tokens == int(0.2 * 2**30) // per_token // 16 * 16


def test_kv_memory_overrides_and_the_old_name_still_works(folder):
    a = Engine.from_pretrained(folder, config=EngineConfig(kv_memory="8MiB"))
    b = Engine.from_pretrained(folder, config=EngineConfig(kv_cache_bytes=8 * 2**20))
    assert a.pool.num_tokens == b.pool.num_tokens > 0
    assert "(kv_memory, float32)" in a.memory_summary()
    with pytest.raises(ValueError, match="not both"):
        EngineConfig(kv_memory="1GiB", kv_cache_bytes=2**30)


@pytest.mark.parametrize("share", [0, -0.5, 0.99, 2])
def test_nonsense_shares_are_refused(share):
    with pytest.raises(ValueError, match="kv_memory_share"):
        EngineConfig(kv_memory_share=share)


def test_a_pool_too_small_for_a_block_or_a_request_is_a_clear_error(folder):
    with pytest.raises(ValueError, match="holds no block"):
        Engine.from_pretrained(folder, config=EngineConfig(kv_memory="1KiB"))
    engine = Engine.from_pretrained(folder, config=EngineConfig(kv_memory="64KiB"))
    room = engine.pool.num_tokens
    with pytest.raises(PromptTooLongError, match="--kv-memory"):
        engine.submit(list(range(5, 5 + room)), SamplingParams(max_tokens=8))


def test_cli_refuses_bad_sizes_before_loading_anything(capsys):
    with pytest.raises(SystemExit):
        main(["run", "village", "--kv-memory", "lots"])
    assert "--kv-memory must be a size" in capsys.readouterr().err


def test_cli_run_says_how_big_the_pool_is(capsys):
    assert main(["run", "village", "--ticks", "1", "--headless", "--kv-memory", "64MiB", "--kv-dtype", "int8"]) == 0
    err = capsys.readouterr().err
    assert "KV pool 64.0 MiB (kv_memory, int8)" in err and "12 agents" in err
