"""Generation behaviour: sampling parameters, stops, seeds, batching, tokenizer and chat template."""

import copy

import pytest
import torch

from swarm.runtime import Engine, SamplingParams
from swarm.runtime.errors import CheckpointError
from swarm.runtime.random_model import tiny_config, write_random_model


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    folder = write_random_model(tmp_path_factory.mktemp("m"), tiny_config(vocab_size=384))
    return Engine.from_pretrained(folder)


def test_seeded_sampling_is_reproducible_and_seeds_differ(engine):
    p = SamplingParams(max_tokens=20, temperature=1.0, seed=11, ignore_eos=True)
    a = engine.generate("The baker", p)[0].token_ids
    b = engine.generate("The baker", p)[0].token_ids
    c = engine.generate("The baker", SamplingParams(max_tokens=20, temperature=1.0, seed=12, ignore_eos=True))
    assert a == b and a != c[0].token_ids


def test_batch_does_not_change_a_request(engine):
    p = SamplingParams(max_tokens=10, temperature=0.8, seed=5, ignore_eos=True)
    alone = engine.generate("The guard walks", p)[0].token_ids
    batch = engine.generate(["A child asks", "The guard walks", "Bread"], p)
    assert batch[1].token_ids == alone


def test_top_k_one_is_greedy(engine):
    greedy = engine.generate("The smith", SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True))
    top1 = engine.generate("The smith", SamplingParams(max_tokens=12, temperature=5.0, top_k=1, seed=1,
                                                      ignore_eos=True))
    assert greedy[0].token_ids == top1[0].token_ids


def test_top_p_keeps_only_the_nucleus(engine):
    ids = engine.tokenizer.encode("The innkeeper")
    logits = engine.logits(ids)[-1]
    probs = logits.softmax(-1)
    best = int(probs.argmax())
    # a nucleus smaller than the top token's mass holds only the top token
    p = SamplingParams(max_tokens=1, temperature=1.0, top_p=float(probs.max()) * 0.9, ignore_eos=True)
    for seed in range(5):
        out = engine.generate([ids], SamplingParams(**{**p.__dict__, "seed": seed}))
        assert out[0].token_ids == [best]


def test_stop_string_cuts_the_text(engine):
    free = engine.generate("Once", SamplingParams(max_tokens=24, temperature=0.0, ignore_eos=True))[0]
    assert len(free.text) > 6
    stop = free.text[3:6]
    out = engine.generate("Once", SamplingParams(max_tokens=24, temperature=0.0, stop=[stop], ignore_eos=True))[0]
    assert out.finish_reason == "stop"
    assert out.text == free.text[: free.text.find(stop)]
    assert stop not in out.text


def test_stop_token_ids(engine):
    free = engine.generate("Once", SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True))[0]
    target = free.token_ids[4]
    out = engine.generate("Once", SamplingParams(max_tokens=12, temperature=0.0, stop_token_ids=[target],
                                                 ignore_eos=True))[0]
    assert out.finish_reason == "stop" and out.token_ids == free.token_ids[: free.token_ids.index(target) + 1]


def test_eos_ends_generation(engine):
    free = engine.generate("Once", SamplingParams(max_tokens=3, temperature=0.0, ignore_eos=True))[0].token_ids
    engine.eos_token_ids.add(free[1])
    try:
        out = engine.generate("Once", SamplingParams(max_tokens=12, temperature=0.0))[0]
        assert out.finish_reason == "stop" and out.token_ids == free[: free.index(free[1]) + 1]
        ignored = engine.generate("Once", SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True))[0]
        assert len(ignored.token_ids) == 12
    finally:
        engine.eos_token_ids = set(engine.config.eos_token_ids) | {engine.tokenizer.eos_token_id}


def test_max_tokens_and_per_prompt_params(engine):
    outs = engine.generate(["a", "b"], [SamplingParams(max_tokens=3, temperature=0, ignore_eos=True),
                                        SamplingParams(max_tokens=7, temperature=0, ignore_eos=True)])
    assert [len(o.token_ids) for o in outs] == [3, 7]
    assert all(o.finish_reason == "length" for o in outs)


def test_logits_are_causal(engine):
    ids = engine.tokenizer.encode("The farmer sells bread at the market")
    full = engine.logits(ids)
    assert full.shape == (len(ids), engine.config.vocab_size) and full.dtype == torch.float32
    assert torch.allclose(engine.logits(ids[:4]), full[:4], atol=1e-5)


def test_tokenizer_and_chat_template(engine):
    tok = engine.tokenizer
    text = "The bard sings at the tavern."
    assert tok.decode(tok.encode(text)) == text
    chat = tok.apply_chat_template([{"role": "user", "content": "Hello"}])
    assert chat == "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n"
    assert tok.eos_token == "<|im_end|>" and tok.eos_token_id in engine.eos_token_ids
    im_start = tok.token_to_id("<|im_start|>")
    assert tok.encode(chat)[0] == im_start  # special tokens stay single tokens


def test_chat_template_is_compiled_once_and_follows_a_new_template(engine):
    tok = copy.copy(engine.tokenizer)
    messages = [{"role": "user", "content": "Hello"}]
    first = tok.apply_chat_template(messages)
    compiled = tok._compiled
    assert tok.apply_chat_template(messages) == first and tok._compiled is compiled
    tok.chat_template = "{% for m in messages %}[{{ m.role }}] {{ m.content }}{% endfor %}"
    assert tok.apply_chat_template(messages) == "[user] Hello"
    tok.chat_template = "{% for m in messages %}"  # broken: a clear error, at render time as before
    with pytest.raises(CheckpointError, match="failed to render"):
        tok.apply_chat_template(messages)


@pytest.mark.parametrize("spread", [0.3, 8.0])  # a peaked distribution, and one flat enough to need a full sort
def test_top_p_samples_only_the_nucleus_found_by_a_full_sort(spread):
    from swarm.runtime.sampling import NUCLEUS_CANDIDATES, Sampler

    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(1000, generator=gen) / spread
    probs = logits.softmax(-1)
    ranked, order = probs.sort(descending=True)
    size = int(((ranked.cumsum(-1) - ranked) < 0.9).sum())  # the reference nucleus
    nucleus = set(order[:size].tolist())
    drawn = {Sampler(SamplingParams(temperature=1.0, top_p=0.9, seed=s))(logits) for s in range(300)}
    assert drawn <= nucleus
    if size > NUCLEUS_CANDIDATES:  # the fallback path ran: tokens past the first candidates come up too
        assert drawn - set(order[:NUCLEUS_CANDIDATES].tolist())


def test_a_prompt_far_longer_than_the_context_is_refused_before_tokenizing(engine, monkeypatch):
    from swarm.runtime.errors import PromptTooLongError

    most = 2 * engine.tokenizer.max_token_chars * engine.max_context
    assert engine.tokenizer.max_token_chars >= max(len(t) for t in ("<|im_start|>", "<|im_end|>"))
    calls = []
    monkeypatch.setattr(engine.tokenizer, "encode", lambda *a, **k: calls.append(a) or [1])
    with pytest.raises(PromptTooLongError, match=f"{most + 1:,} characters"):
        engine.submit("a" * (most + 1))
    assert calls == []  # megabytes of text are not tokenized only to be refused
