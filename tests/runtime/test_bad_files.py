"""Bad checkpoint and adapter files are refused at load with one clear line: the file, the field or tensor,
the value and what was expected; never a raw traceback, never a model that loads and outputs nothing."""

import inspect
import json
import re
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from swarm.cli import main
from swarm.runtime import CheckpointError, Engine
from swarm.runtime import config as config_mod
from swarm.runtime import loader as loader_mod
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


def _edit_tensors(file, edit):
    tensors = load_file(file)
    edit(tensors)
    save_file(tensors, file)


def _edit_weights(folder, edit):
    _edit_tensors(folder / "model.safetensors", edit)


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


# -- weights ---------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_weights_are_refused_by_name(folder, bad):
    def poison(t):
        t["model.layers.1.mlp.experts.2.up_proj.weight"][3, 5] = bad

    _edit_weights(folder, poison)
    with pytest.raises(CheckpointError, match=r"'model\.layers\.1\.mlp\.experts\.2\.up_proj\.weight' .*NaN or inf"):
        Engine.from_pretrained(folder)


def test_non_finite_weights_in_a_half_precision_file_are_refused(folder):
    def poison(t):
        for k in t:
            t[k] = t[k].half()
        t["lm_head.weight"][0, 0] = float("nan")

    _edit_weights(folder, poison)
    with pytest.raises(CheckpointError, match=r"'lm_head\.weight' .*NaN or inf"):
        Engine.from_pretrained(folder)


def test_weights_too_large_for_a_narrower_compute_dtype_are_refused(folder):
    def huge(t):
        t["model.norm.weight"][0] = 1e6  # finite in float32, inf in float16

    _edit_weights(folder, huge)
    loader_mod.load_model(folder, dtype=torch.float32)
    with pytest.raises(CheckpointError, match=r"'model\.norm\.weight' .*holds values too large for torch\.float16"):
        loader_mod.load_model(folder, dtype=torch.float16)


def test_cli_refuses_a_nan_model_instead_of_printing_nothing(folder, capsys):
    def poison(t):
        t["model.embed_tokens.weight"][:] = float("nan")

    _edit_weights(folder, poison)
    assert main(["generate", "--model", str(folder), "--max-tokens", "4", "hi"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'model.embed_tokens.weight'" in err


def test_every_missing_tensor_is_counted_and_a_few_named(folder):
    gone = [f"model.layers.{i}.self_attn.{p}_proj.weight" for i in (0, 1) for p in "qkvo"][:7]
    _edit_weights(folder, lambda t: [t.pop(k) for k in gone])
    with pytest.raises(CheckpointError) as e:
        Engine.from_pretrained(folder)
    message = str(e.value)
    assert "7 tensors" in message and "and 2 more are missing" in message
    assert sum(f"'{k}'" in message for k in gone) == 5


def test_shapes_are_checked_before_the_model_is_allocated(folder, monkeypatch):
    _set_config(folder, vocab_size=2**40)  # a typo that would ask for 256 TiB

    def allocate(cfg):
        raise AssertionError("the model was allocated before its tensors' shapes were checked")

    monkeypatch.setattr(loader_mod, "Model", allocate)
    with pytest.raises(CheckpointError, match=r"'model\.embed_tokens\.weight' has shape \(512, 64\), expected"):
        loader_mod.load_model(folder)


@pytest.mark.parametrize("extra, why", [
    ("model.layers.2.self_attn.q_proj.weight", "a layer config.json does not have"),
    ("model.layers.0.mlp.experts.4.up_proj.weight", "an expert config.json does not have"),
    ("model.layers.0.self_attn.o_proj.bias", "a bias config.json does not ask for"),
])
def test_extra_layer_tensors_mean_config_and_weights_disagree(folder, extra, why):
    _edit_weights(folder, lambda t: t.update({extra: torch.zeros(4)}))
    with pytest.raises(CheckpointError, match=f"holds tensor '{re.escape(extra)}', which the qwen3_moe model"):
        Engine.from_pretrained(folder)


def test_harmless_extra_tensors_only_warn(folder):
    extras = {"model.layers.0.self_attn.rotary_emb.inv_freq": torch.ones(8), "value_head.weight": torch.ones(3)}
    _edit_weights(folder, lambda t: t.update(extras))
    with pytest.warns(UserWarning, match="2 checkpoint tensors were not used"):
        Engine.from_pretrained(folder)
