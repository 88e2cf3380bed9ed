"""Tests for spell/builtin/tiny.py: offline tokenizer + Qwen2 builder, and ids that survive save/reload.

Run: .venv/bin/python -m pytest tests/unit/test_tiny.py -q
"""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from spell.builtin.tiny import CHATML_TEMPLATE, build_tiny_model, build_tiny_tokenizer, save_policy
from spell.rl.engine.base import encode_chat_prompt

CORPUS = [
    "The river Alder flows 42 km north to the town of Brenn, founded in 1203.",
    "Ünïcödé café: naïve façade, 3.14159 and 2,718.28 — prices in € and ¥.",
    "Question: what is 17 + 25? Answer: 42. The answer is (B).",
    "東京 is a city; 数字 123 and emoji 😀 appear here too.",
] * 10


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer(CORPUS, vocab_size=400)


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tokenizer):
    """(model, folder) with the policy saved by save_policy."""
    model = build_tiny_model(tokenizer, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2)
    folder = save_policy(model, tokenizer, tmp_path_factory.mktemp("policy"))
    return model, folder


def test_special_tokens_and_padding(tokenizer):
    # trainer order: <|endoftext|>=0, <|im_start|>=1, <|im_end|>=2
    assert tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>"]) == [0, 1, 2]
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.eos_token_id == 2
    assert tokenizer.pad_token == "<|endoftext|>" and tokenizer.pad_token_id == 0
    assert tokenizer.padding_side == "left"
    assert tokenizer.bos_token is None
    # 256 byte symbols + 3 specials = 259 <= size <= requested 400
    assert 259 < len(tokenizer) <= 400


def test_chat_template_renders_chatml(tokenizer):
    ids = encode_chat_prompt(tokenizer, "hi 42")
    assert tokenizer.decode(ids) == "<|im_start|>user\nhi 42<|im_end|>\n<|im_start|>assistant\n"
    assert ids[0] == 1  # <|im_start|>
    assert ids.count(2) == 1  # exactly one <|im_end|>: the user turn's
    assert tokenizer.chat_template == CHATML_TEMPLATE


def test_scaffold_words_are_single_tokens(tokenizer):
    # "user" and "assistant" are trained as whole tokens so chat prompts stay short in a tiny vocabulary
    for word in ("user", "assistant"):
        assert len(tokenizer(word)["input_ids"]) == 1


@pytest.mark.parametrize(
    "text",
    [
        "plain words and the river Alder",  # ascii, in-corpus
        "digits 1203 3.14159 2,718.28 -17",  # digits are split one by one (Qwen2 rule)
        "Ünïcödé café naïve façade",  # accented letters (NFC)
        "東京 数字 😀 ｆｕｌｌ",  # CJK, emoji, full-width: byte fallback through ByteLevel
        "  leading spaces\n\n\ttabs and newlines  ",  # whitespace runs
        "<|im_start|>user\nhi<|im_end|>",  # special tokens inside text
        "unseen-words: zyxquv, qwop!!",  # out-of-corpus text
    ],
)
def test_ids_identical_after_save_and_reload(tokenizer, saved, text):
    _, folder = saved
    reloaded = AutoTokenizer.from_pretrained(folder)
    assert reloaded(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert reloaded.decode(reloaded(text)["input_ids"]) == text  # lossless round trip (text is NFC)


def test_reloaded_tokenizer_keeps_chat_template_and_specials(tokenizer, saved):
    _, folder = saved
    reloaded = AutoTokenizer.from_pretrained(folder)
    assert encode_chat_prompt(reloaded, "hi 42") == encode_chat_prompt(tokenizer, "hi 42")
    assert (reloaded.eos_token_id, reloaded.pad_token_id, reloaded.padding_side) == (2, 0, "left")
    config = json.loads((folder / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "Qwen2Tokenizer"


def test_model_config_wired_from_tokenizer(tokenizer):
    model = build_tiny_model(tokenizer, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2)
    config = model.config
    assert config.vocab_size == len(tokenizer)
    assert (config.eos_token_id, config.pad_token_id) == (2, 0)
    assert config.tie_word_embeddings is True
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert config.intermediate_size == 128  # default 4 * hidden_size = 4 * 32
    assert sorted(model.generation_config.eos_token_id) == [0, 2]


def test_model_seed_controls_init_and_keeps_global_rng(tokenizer):
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = build_tiny_model(tokenizer, hidden_size=32, seed=1)
    after = torch.rand(1)
    b = build_tiny_model(tokenizer, hidden_size=32, seed=1)
    c = build_tiny_model(tokenizer, hidden_size=32, seed=2)
    assert torch.equal(before, after)  # building did not consume the caller's RNG stream
    assert torch.equal(a.model.embed_tokens.weight, b.model.embed_tokens.weight)
    assert not torch.equal(a.model.embed_tokens.weight, c.model.embed_tokens.weight)


def test_saved_model_reloads_offline_with_same_logits(saved, tokenizer, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, folder = saved
    reloaded = AutoModelForCausalLM.from_pretrained(folder)
    assert (folder / "model.safetensors").is_file()
    ids = torch.tensor([encode_chat_prompt(tokenizer, "what is 17 + 25?")])
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, reloaded(ids).logits, atol=1e-6)
    assert sorted(reloaded.generation_config.eos_token_id) == [0, 2]
