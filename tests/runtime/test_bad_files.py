"""Bad checkpoint and adapter files are refused at load with one clear line: the file, the field or tensor,
the value and what was expected; never a raw traceback, never a model that loads and outputs nothing."""

import inspect
import json
import re
import shutil

import pytest

from swarm.cli import main
from swarm.runtime import CheckpointError, Engine
from swarm.runtime import config as config_mod
from swarm.runtime.config import ModelConfig
from swarm.runtime.random_model import tiny_config, write_random_model


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return write_random_model(tmp_path_factory.mktemp("good"), tiny_config(max_position_embeddings=64))


@pytest.fixture
def folder(good, tmp_path):
    return shutil.copytree(good, tmp_path / "m")


def _set_config(folder, **fields):
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(fields)
    (folder / "config.json").write_text(json.dumps(cfg))


# -- config.json ---------------------------------------------------------------------------

BAD_FIELDS = [  # (field, value, what the message says is expected)
    ("hidden_size", "256", "a positive integer"),
    ("num_hidden_layers", 4.5, "an integer from 1 to"),
    ("num_hidden_layers", 10**9, "an integer from 1 to"),
    ("vocab_size", None, "a positive integer"),
    ("vocab_size", True, "a positive integer"),
    ("num_attention_heads", 0, "a positive integer"),
    ("num_key_value_heads", -2, "a positive integer"),
    ("head_dim", "16", "a positive integer"),
    ("intermediate_size", -1, "an integer >= 0"),
    ("max_position_embeddings", "2048", "a positive integer"),
    ("rms_norm_eps", -1e-6, "a positive number"),
    ("rope_theta", "big", "a positive number"),
    ("rope_scaling", [1, 2], "an object"),
    ("tie_word_embeddings", "false", "true or false"),
    ("hidden_act", 5, "a string"),
    ("bos_token_id", -1, "an integer >= 0"),
    ("eos_token_id", [2, "x"], "a token id"),
    ("num_experts", "4", "an integer from 0 to"),
    ("num_experts", 10**8, "an integer from 0 to"),
    ("num_experts_per_tok", 0, "a positive integer"),
    ("moe_intermediate_size", 12.5, "an integer >= 0"),
    ("norm_topk_prob", "yes", "true or false"),
    ("mlp_only_layers", {"0": 1}, "a list of layer indices"),
    ("decoder_sparse_step", 0, "a positive integer"),
    ("layer_types", ["full_attention", "sliding"], '"full_attention" or "sliding_attention"'),
    ("sliding_window", -1, "an integer >= 0"),
    ("model_type", ["qwen3_moe"], "a string"),
]


@pytest.mark.parametrize("field, value, expected", BAD_FIELDS, ids=[f"{f}={v!r}"[:40] for f, v, _ in BAD_FIELDS])
def test_a_mistyped_config_field_is_named_with_its_value_and_what_it_must_be(folder, field, value, expected):
    _set_config(folder, **{field: value})
    with pytest.raises(CheckpointError) as e:
        Engine.from_pretrained(folder)
    message = str(e.value)
    assert f"field {field} is {json.dumps(value)}" in message
    assert expected in message and str(folder / "config.json") in message


def test_a_mistyped_rope_setting_is_named_inside_rope_scaling(folder):
    _set_config(folder, rope_scaling={"rope_type": "linear", "factor": "2"})
    with pytest.raises(CheckpointError, match=r'field rope_scaling\.factor is "2" \(a string\); expected a positive'):
        Engine.from_pretrained(folder)


@pytest.mark.parametrize("whole", [[1, 2], None, "qwen3_moe"])
def test_a_config_that_is_not_an_object_is_refused(folder, whole):
    (folder / "config.json").write_text(json.dumps(whole))
    with pytest.raises(CheckpointError, match="must be a JSON object of fields"):
        Engine.from_pretrained(folder)


def test_heads_that_do_not_divide_the_hidden_size_are_refused(folder):
    _set_config(folder, num_attention_heads=3, num_key_value_heads=1, head_dim=None)
    with pytest.raises(CheckpointError, match=r"hidden_size \(64\) is not a multiple of num_attention_heads \(3\)"):
        Engine.from_pretrained(folder)


def test_a_dense_model_needs_an_intermediate_size():
    cfg = {**tiny_config("llama"), "intermediate_size": 0}
    with pytest.raises(CheckpointError, match="intermediate_size must be positive for dense layers, got 0"):
        ModelConfig.from_hf(cfg)


def test_every_field_the_reader_takes_is_checked():
    # Every key the family readers look up has an expectation, so a new one cannot slip in unchecked ...
    source = inspect.getsource(config_mod)
    read = set(re.findall(r"""(?:cfg|params)(?:\.get\(|\[)["'](\w+)["']""", source))
    assert read and read <= set(config_mod.FIELDS) | set(config_mod.ROPE_FIELDS), read - set(config_mod.FIELDS)
    # ... and each expectation is enforced: a list of lists fits no field
    for family in ("qwen3_moe", "llama", "mixtral", "qwen2_moe", "olmoe", "granitemoe"):
        base = tiny_config(family)
        for field in config_mod.FIELDS:
            with pytest.raises(CheckpointError, match=f"field {field} is"):
                ModelConfig.from_hf({**base, field: [[]]})
        for field in config_mod.ROPE_FIELDS:
            with pytest.raises(CheckpointError, match=f"field rope_scaling.{field} is"):
                ModelConfig.from_hf({**base, "rope_scaling": {field: [[]]}})


def test_cli_reports_a_bad_config_in_one_line(folder, capsys):
    _set_config(folder, hidden_size="256")
    assert main(["generate", "--model", str(folder), "hi"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("swarm: error:") and 'hidden_size is "256"' in err
