"""Bad input gets a clear error that names what is wrong."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from swarm.cli import main
from swarm.runtime import CheckpointError, ConfigError, Engine, PromptTooLongError, SamplingParams
from swarm.runtime.random_model import tiny_config, write_random_model


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return write_random_model(tmp_path_factory.mktemp("good"), tiny_config(max_position_embeddings=64))


@pytest.fixture
def model_dir(good, tmp_path):
    return shutil.copytree(good, tmp_path / "m")


def test_missing_folder(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        Engine.from_pretrained(tmp_path / "nope")


@pytest.mark.parametrize("name, message", [
    ("config.json", "no config.json"),
    ("model.safetensors", "no model.safetensors"),
    ("tokenizer.json", "no tokenizer.json"),
])
def test_missing_file(model_dir, name, message):
    (model_dir / name).unlink()
    with pytest.raises(CheckpointError, match=message):
        Engine.from_pretrained(model_dir)


def test_unsupported_model_type_names_it_and_the_supported_families(model_dir):
    cfg = json.loads((model_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps({**cfg, "model_type": "gpt_neox"}))
    with pytest.raises(ConfigError) as e:
        Engine.from_pretrained(model_dir)
    assert "'gpt_neox'" in str(e.value)
    for family in ("mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "granitemoe", "llama", "qwen2", "qwen3", "mistral",
                   "phi3", "gemma2", "gemma3_text"):
        assert family in str(e.value)


def test_missing_tensor_is_named(model_dir):
    tensors = load_file(model_dir / "model.safetensors")
    del tensors["model.layers.1.self_attn.k_proj.weight"]
    save_file(tensors, model_dir / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"'model\.layers\.1\.self_attn\.k_proj\.weight' is missing"):
        Engine.from_pretrained(model_dir)


def test_misshaped_tensor_names_both_shapes(model_dir):
    tensors = load_file(model_dir / "model.safetensors")
    tensors["model.norm.weight"] = torch.ones(63)
    save_file(tensors, model_dir / "model.safetensors")
    with pytest.raises(CheckpointError) as e:
        Engine.from_pretrained(model_dir)
    assert "'model.norm.weight'" in str(e.value) and "(63,)" in str(e.value) and "(64,)" in str(e.value)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_safetensors(model_dir, damage):
    path = model_dir / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(b"\x00\x01not a safetensors file" * 10 if damage == "garbage" else data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt"):
        Engine.from_pretrained(model_dir)


def test_missing_shard(model_dir):
    (model_dir / "model.safetensors").rename(model_dir / "model-00001-of-00002.safetensors")
    index = {"weight_map": {"model.norm.weight": "model-00001-of-00002.safetensors",
                            "lm_head.weight": "model-00002-of-00002.safetensors"}}
    (model_dir / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="model-00002-of-00002.safetensors"):
        Engine.from_pretrained(model_dir)


def test_invalid_config_values(model_dir):
    cfg = json.loads((model_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps({**cfg, "num_key_value_heads": 3}))
    with pytest.raises(ConfigError, match="multiple of"):
        Engine.from_pretrained(model_dir)


def test_prompt_longer_than_context(good):
    engine = Engine.from_pretrained(good)
    with pytest.raises(PromptTooLongError, match="context is 64 tokens"):
        engine.generate([[5] * 60], SamplingParams(max_tokens=8))
    with pytest.raises(PromptTooLongError):
        engine.logits([5] * 65)
    engine.generate([[5] * 56], SamplingParams(max_tokens=8))  # exactly fits


def test_bad_tokens_and_params(good):
    engine = Engine.from_pretrained(good)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        engine.logits([1, 10**6])
    with pytest.raises(ValueError, match="at least one token"):
        engine.generate([[]])
    with pytest.raises(ValueError, match="2 SamplingParams for 1 prompts"):
        engine.generate(["a"], [SamplingParams(), SamplingParams()])
    for bad in (dict(max_tokens=0), dict(temperature=-1), dict(top_p=0), dict(top_k=-1), dict(stop=[""])):
        with pytest.raises(ValueError):
            SamplingParams(**bad)


def test_cli_reports_errors_without_a_traceback(tmp_path, capsys):
    assert main(["generate", "--model", str(tmp_path / "missing"), "hi"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("swarm: error:") and "does not exist" in err


@pytest.mark.parametrize("name, error", [("config.json", ConfigError), ("tokenizer_config.json", CheckpointError),
                                         ("model.safetensors.index.json", CheckpointError)])
def test_malformed_json_names_the_file(model_dir, name, error):
    (model_dir / name).write_text("{not json")
    with pytest.raises(error, match=f"{name}.* is not valid JSON"):
        Engine.from_pretrained(model_dir)
