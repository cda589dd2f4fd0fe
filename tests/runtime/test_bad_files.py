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
from swarm.runtime import CheckpointError, Engine, EngineConfig
from swarm.runtime import config as config_mod
from swarm.runtime import loader as loader_mod
from swarm.runtime import lora as lora_mod
from swarm.runtime.config import ModelConfig
from swarm.runtime.random_model import tiny_config, write_random_model
from tests.runtime.adapters import random_adapter


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
    for family in ("qwen3_moe", "llama", "mixtral", "qwen2_moe", "olmoe", "granitemoe", "mistral", "phi3",
                   "gemma2", "gemma3_text"):
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



# -- quantised checkpoints: refused, never loaded as if their stored values were the weights ------------------

@pytest.mark.parametrize("key, method", [
    ("quantization_config", {"quant_method": "fp8", "weight_block_size": [128, 128]}),
    ("quantization_config", {"quant_method": "gptq", "bits": 4}),
    ("quantization_config", {"quant_method": "bitsandbytes", "load_in_4bit": True}),
    ("compression_config", {"quant_method": "compressed-tensors"}),
])
def test_a_quantization_config_is_refused_by_its_method(folder, key, method):
    _set_config(folder, **{key: method})
    with pytest.raises(CheckpointError, match=f"has a {key} \\(quant_method '{method['quant_method']}'\\)"):
        Engine.from_pretrained(folder)


def test_fp8_weights_are_refused_by_their_stored_type(folder):
    name = "model.layers.1.self_attn.k_proj.weight"
    _edit_weights(folder, lambda t: t.update({name: t[name].to(torch.float8_e4m3fn)}))
    with pytest.raises(CheckpointError, match=f"tensor '{re.escape(name)}' in model.safetensors is stored as "
                                              "F8_E4M3, a quantised format"):
        Engine.from_pretrained(folder)


@pytest.mark.parametrize("extra", [
    "model.layers.0.self_attn.q_proj.weight_scale_inv",  # FP8 block scales
    "model.layers.1.mlp.experts.0.up_proj.qzeros",  # GPTQ
    "lm_head.scales",  # outside the layers too
    "model.embed_tokens.weight.quant_state.bitsandbytes__nf4",
])
def test_quantisation_tensors_are_refused_by_name(folder, extra):
    _edit_weights(folder, lambda t: t.update({extra: torch.ones(4)}))
    with pytest.raises(CheckpointError, match=f"holds tensor '{re.escape(extra)}': quantisation data"):
        Engine.from_pretrained(folder)

# -- LoRA adapters ---------------------------------------------------------------------------------

TARGETS = ("q_proj", "v_proj", "o_proj")  # what random_adapter targets


@pytest.fixture(scope="module")
def engine(good):
    return Engine.from_pretrained(good, config=EngineConfig(max_lora_rank=16))


A0 = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
B1 = "base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"


def _set(key, index, value):
    def edit(t):
        t[key][index] = value
    return edit


BAD_ADAPTERS = {  # name -> (adapter_config.json fields, tensor edit or None, the message)
    "nan": ({}, _set(A0, (1, 2), float("nan")), f"tensor '{A0}' holds NaN or infinite values"),
    "inf": ({}, _set(B1, (0, 0), float("inf")), f"tensor '{B1}' holds NaN or infinite values"),
    "absurd_r": ({"r": 100000}, None, r"gives self_attn\.\w+ rank 100000 .* has rank 4: config and weights disagree"),
    "rank_pattern": ({"rank_pattern": {"v_proj": 2}}, None, "gives self_attn.v_proj rank 2 .* has rank 4"),
    "r_string": ({"r": "4"}, None, 'field r is "4"; expected a positive integer'),
    "alpha_string": ({"lora_alpha": "8"}, None, 'field lora_alpha is "8"; expected a finite number'),
    "alpha_overflow": ({"lora_alpha": 1e300}, None, "lora_alpha 1e\\+300 overflows"),
    "banana": ({"target_modules": ["banana_proj"]}, None,
               "target_modules lists 'banana_proj', which is no LoRA target of this qwen3_moe model"),
    "dense_mlp_on_moe": ({"target_modules": [*TARGETS, "down_proj"]}, None,
                         "lists 'down_proj', which is no LoRA target of this qwen3_moe model"),
    "no_k_tensors": ({"target_modules": [*TARGETS, "k_proj"]}, None,
                     "lists 'k_proj', but the adapter holds no lora_A/lora_B tensors for it"),
    "untargeted": ({"target_modules": ["q_proj", "o_proj"]}, None,
                   "holds weights for 'model.layers.0.self_attn.v_proj' and 1 more, which its target_modules"),
    "regex_untargeted": ({"target_modules": r".*\.(q|o)_proj"}, None, "which its target_modules"),
    "bad_regex": ({"target_modules": "(q_proj"}, None, "is not a regular expression"),
    "bad_rank_pattern": ({"rank_pattern": {"(": 2}}, None, 'field rank_pattern is {"\\(": 2}'),
    "targets_not_names": ({"target_modules": [1, 2]}, None, "field target_modules is \\[1, 2\\]"),
    "missing_b": ({}, lambda t: t.pop(B1), "self_attn.v_proj in layer 1 has lora_A only, no lora_B"),
    "one_d": ({}, lambda t: t.update({A0: torch.zeros(64)}), "rank/shape mismatch"),
    "ranks_differ": ({}, lambda t: t.update({B1: torch.zeros(32, 3)}), "rank/shape mismatch"),
}


@pytest.mark.parametrize("case", BAD_ADAPTERS)
def test_misfitting_adapters_are_refused(engine, tmp_path, case):
    config, edit, message = BAD_ADAPTERS[case]
    folder = random_adapter(tmp_path / case, engine.config, std=0.1, config=config)
    if edit:
        _edit_tensors(folder / "adapter_model.safetensors", edit)
    with pytest.raises(CheckpointError, match=message):
        engine.add_adapter(case, folder)
    assert case not in engine.adapters()


def test_an_adapter_above_max_lora_rank_is_refused_before_its_tensors_are_read(engine, tmp_path, monkeypatch):
    folder = random_adapter(tmp_path / "wide", engine.config, r=32)
    real = lora_mod.safe_open

    class HeadersOnly:
        def __init__(self, *args, **kwargs):
            self.file = real(*args, **kwargs)
            self.keys, self.get_slice = self.file.keys, self.file.get_slice

        def get_tensor(self, key):
            raise AssertionError(f"{key} was read before the adapter's rank was checked")

    monkeypatch.setattr(lora_mod, "safe_open", HeadersOnly)
    with pytest.raises(CheckpointError, match=r"rank 32, above EngineConfig\.max_lora_rank \(16\)"):
        engine.add_adapter("wide", folder)


def test_a_fitting_adapter_with_rank_pattern_and_regex_targets_is_accepted(engine, tmp_path):
    # the checks above must not refuse what PEFT writes: per-module ranks (here every module's: r alone would
    # not fit), keys and targets as regular expressions
    folder = random_adapter(tmp_path / "fits", engine.config, config={
        "r": 8, "rank_pattern": {"q_proj": 4, r"layers\.\d+\.self_attn\.(v|o)_proj": 4},
        "target_modules": r"model\.layers\.\d+\.self_attn\.(q|v|o)_proj"})
    engine.add_adapter("fits", folder)
    assert "fits" in engine.adapters()
