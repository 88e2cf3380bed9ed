"""Tests for spell.rl.policy: chunked log-probs vs the naive full-logits path, batching, loading (spec §7.2).

The tiny models are built inline (no downloads, no other helpers' fixtures).
Run: .venv/bin/python -m pytest tests/unit/test_policy.py
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, models, pre_tokenizers
from torch import nn
from transformers import (
    Gemma2Config,
    Gemma2ForCausalLM,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from spell.config import ModelConfig
from spell.rl.batching import collate, pack_micro_batches
from spell.rl.policy import (
    disable_dropout,
    ensure_pad_token,
    load_policy,
    resolve_device,
    resolve_dtype,
    sequence_logprobs,
)
from spell.types import Role, RoleSample, TaskType

VOCAB = 257


def _tiny_qwen2(seed: int = 0) -> Qwen2ForCausalLM:
    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return Qwen2ForCausalLM(config).float()


def _sample(prompt, completion, advantage=0.0, temperature=1.0) -> RoleSample:
    return RoleSample(role=Role.RESPONDER, task=TaskType.DOC_MC, group_id="g", prompt_ids=tuple(prompt),
                      completion_ids=tuple(completion), reward=0.0, advantage=advantage, temperature=temperature)


def _left_padded_batch(seed: int = 1) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    shapes = [(3, 4), (6, 5), (2, 1), (5, 0)]  # (prompt, completion) lengths; the last has no completion
    samples = [_sample(torch.randint(1, VOCAB, (p,), generator=gen).tolist(),
                       torch.randint(1, VOCAB, (c,), generator=gen).tolist()) for p, c in shapes]
    return collate(samples, pad_id=0)


def _naive_logprobs(model, batch, with_entropy=False, temperatures=None):
    """Full [N, L, V] logits (/ T per row) -> log_softmax -> gather: the reference the chunked path must match."""
    position_ids = (batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   position_ids=position_ids).logits.float()
    if temperatures is not None:
        logits = logits / torch.as_tensor(temperatures, dtype=torch.float32)[:, None, None]  # [N, 1, 1]
    logprobs_all = torch.log_softmax(logits[:, :-1], dim=-1)  # [N, L-1, V]
    scored = batch["completion_mask"][:, 1:]
    token = logprobs_all.gather(-1, batch["input_ids"][:, 1:, None]).squeeze(-1)
    entropy = -(logprobs_all.exp() * logprobs_all).sum(-1)
    pad = torch.zeros(scored.shape[0], 1)
    logprobs = torch.cat([pad, torch.where(scored, token, 0.0)], dim=1)
    return logprobs, torch.cat([pad, torch.where(scored, entropy, 0.0)], dim=1)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny matmuls: a second thread only adds contention (20x slower on a loaded 2-core machine)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def tiny_model():
    return _tiny_qwen2()


@pytest.mark.parametrize("chunk_tokens", [1, 3, 1024])  # one row per chunk, uneven chunks, one chunk
def test_chunked_logprobs_and_grads_match_naive(tiny_model, chunk_tokens):
    batch = _left_padded_batch()
    tiny_model.zero_grad()
    naive, _ = _naive_logprobs(tiny_model, batch)
    naive.sum().backward()
    naive_grads = {name: p.grad.clone() for name, p in tiny_model.named_parameters()}
    tiny_model.zero_grad()
    chunked, entropy = sequence_logprobs(tiny_model, batch["input_ids"], batch["attention_mask"],
                                         batch["completion_mask"], chunk_tokens=chunk_tokens)
    chunked.sum().backward()
    assert entropy is None
    assert chunked.shape == batch["input_ids"].shape
    assert torch.allclose(chunked, naive, atol=1e-5)
    # off the completion mask (prompt, padding, position 0) the log-prob is exactly 0
    assert (chunked[~batch["completion_mask"]] == 0).all()
    assert (chunked[batch["completion_mask"]] < 0).all()
    for name, param in tiny_model.named_parameters():
        assert torch.allclose(param.grad, naive_grads[name], atol=1e-5), name


def test_entropy_and_its_gradient_match_naive(tiny_model):
    batch = _left_padded_batch(seed=2)
    tiny_model.zero_grad()
    _, naive_entropy = _naive_logprobs(tiny_model, batch)
    naive_entropy.sum().backward()
    naive_grads = {name: p.grad.clone() for name, p in tiny_model.named_parameters()}
    tiny_model.zero_grad()
    _, entropy = sequence_logprobs(tiny_model, batch["input_ids"], batch["attention_mask"],
                                   batch["completion_mask"], chunk_tokens=4, with_entropy=True)
    entropy.sum().backward()
    assert torch.allclose(entropy, naive_entropy, atol=1e-5)
    # a random 257-way head is near uniform: entropy close to ln 257 = 5.549
    assert entropy[batch["completion_mask"]].min() > 5.0
    for name, param in tiny_model.named_parameters():
        assert torch.allclose(param.grad, naive_grads[name], atol=1e-5), name


@pytest.mark.parametrize("chunk_tokens", [3, 1024])
def test_logprobs_at_temperature_match_full_logits_divided_by_t(tiny_model, chunk_tokens):
    batch = _left_padded_batch()
    naive_t1, _ = _naive_logprobs(tiny_model, batch)
    naive, _ = _naive_logprobs(tiny_model, batch, temperatures=[0.7] * 4)  # log_softmax(logits / 0.7)
    chunked, _ = sequence_logprobs(tiny_model, batch["input_ids"], batch["attention_mask"],
                                   batch["completion_mask"], chunk_tokens, temperature=0.7)
    assert torch.allclose(chunked, naive, atol=1e-5)
    # T = 0.7 really changed them: not the T = 1 values (a near-uniform head differs by > 1e-3 per token)
    scored = batch["completion_mask"]
    assert ((chunked[scored] - naive_t1[scored]).abs() > 1e-3).all()


def test_per_row_temperatures_each_match_their_own_and_their_gradients(tiny_model):
    batch = _left_padded_batch(seed=3)
    temperatures = torch.tensor([0.7, 1.0, 0.7, 1.0])  # rows 0 and 2 at 0.7, rows 1 and 3 at 1.0
    tiny_model.zero_grad()
    naive, _ = _naive_logprobs(tiny_model, batch, temperatures=temperatures)
    naive.sum().backward()
    naive_grads = {name: p.grad.clone() for name, p in tiny_model.named_parameters()}
    tiny_model.zero_grad()
    chunked, _ = sequence_logprobs(tiny_model, batch["input_ids"], batch["attention_mask"],
                                   batch["completion_mask"], chunk_tokens=3, temperature=temperatures)
    chunked.sum().backward()
    at_07, _ = _naive_logprobs(tiny_model, batch, temperatures=[0.7] * 4)
    at_1, _ = _naive_logprobs(tiny_model, batch)
    assert torch.allclose(chunked[[0, 2]], at_07[[0, 2]], atol=1e-5)
    assert torch.allclose(chunked[[1, 3]], at_1[[1, 3]], atol=1e-5)
    for name, param in tiny_model.named_parameters():
        assert torch.allclose(param.grad, naive_grads[name], atol=1e-5), name


def test_entropy_at_temperature_matches_naive_and_is_lower_than_at_one(tiny_model):
    batch = _left_padded_batch(seed=2)
    _, naive_entropy = _naive_logprobs(tiny_model, batch, temperatures=[0.7] * 4)
    _, entropy = sequence_logprobs(tiny_model, batch["input_ids"], batch["attention_mask"],
                                   batch["completion_mask"], chunk_tokens=4, with_entropy=True, temperature=0.7)
    _, entropy_t1 = sequence_logprobs(tiny_model, batch["input_ids"], batch["attention_mask"],
                                      batch["completion_mask"], chunk_tokens=4, with_entropy=True)
    assert torch.allclose(entropy, naive_entropy, atol=1e-5)
    # T < 1 sharpens every non-uniform distribution: strictly less entropy at each scored position
    scored = batch["completion_mask"]
    assert (entropy[scored] < entropy_t1[scored]).all()


class _OneHotLM(nn.Module):
    """Hand-checkable LM over 2 tokens: the "decoder" embeds token k as the one-hot e_k (no context), so the
    logits after token k are column k of the 2x2 head weight (then the soft-cap, if any)."""

    def __init__(self, weight: list[list[float]], softcap: float | None = None) -> None:
        super().__init__()
        self.embed = nn.Embedding(2, 2, _weight=torch.eye(2))
        self.lm_head = nn.Linear(2, 2, bias=False)
        self.lm_head.weight.data = torch.tensor(weight)
        self.config = SimpleNamespace(final_logit_softcapping=softcap)

    def get_decoder(self):
        return lambda input_ids, **_: SimpleNamespace(last_hidden_state=self.embed(input_ids))

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head


def _two_token_batch() -> dict[str, torch.Tensor]:
    return collate([_sample([0], [1, 0])], pad_id=0)  # prompt "0", completion "1 0": input_ids [[0, 1, 0]]


def test_two_token_hand_example_at_temperature():
    # logits after token 0: column 0 = z0 = [0, 0.7 ln 3]; after token 1: column 1 = z1 = [1.4 ln 2, 0]
    model = _OneHotLM([[0.0, 1.4 * math.log(2)], [0.7 * math.log(3), 0.0]])
    batch = _two_token_batch()
    args = (batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
    logprobs, entropy = sequence_logprobs(model, *args, with_entropy=True, temperature=batch["temperatures"] * 0.7)
    # T = 0.7: z0 / T = [0, ln 3] -> p = [1/4, 3/4], token 1: ln 3/4 = -0.28768
    #          z1 / T = [ln 4, 0] -> p = [4/5, 1/5], token 0: ln 4/5 = -0.22314
    assert logprobs[0].tolist() == pytest.approx([0.0, -0.28768, -0.22314], abs=1e-5)
    # entropy: -(1/4 ln 1/4 + 3/4 ln 3/4) = 0.34657 + 0.21576 = 0.56233;
    #          -(4/5 ln 4/5 + 1/5 ln 1/5) = 0.17851 + 0.32189 = 0.50040
    assert entropy[0].tolist() == pytest.approx([0.0, 0.56233, 0.50040], abs=1e-5)
    at_one, _ = sequence_logprobs(model, *args)
    # T = 1: ln(e^0.76903 / (1 + e^0.76903)) = ln(2.15766 / 3.15766) = -0.38081;
    #        ln(e^0.97041 / (1 + e^0.97041)) = ln(2.63902 / 3.63902) = -0.32131
    assert at_one[0].tolist() == pytest.approx([0.0, -0.38081, -0.32131], abs=1e-5)


def test_temperature_divides_after_the_softcap_like_the_sampler():
    # z after either token: [0, atanh 0.5] = [0, 0.54931] (target 1), [0.54931, 0] (target 0); cap 1, T = 0.5
    cap_arg = math.atanh(0.5)
    model = _OneHotLM([[0.0, cap_arg], [cap_arg, 0.0]], softcap=1.0)
    batch = _two_token_batch()
    logprobs, _ = sequence_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["completion_mask"],
                                    temperature=0.5)
    # cap then T: tanh(0.54931) = 0.5, / 0.5 = 1 -> ln(e / (1 + e)) = -0.31326
    # (T then cap would give tanh(0.54931 / 0.5) = tanh(ln 3) = 0.8 -> ln(e^0.8 / (1 + e^0.8)) = -0.37110)
    assert logprobs[0].tolist() == pytest.approx([0.0, -0.31326, -0.31326], abs=1e-5)


def test_greedy_temperature_zero_is_scored_at_one_and_wrong_shapes_raise(tiny_model):
    batch = _left_padded_batch()
    args = (batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
    at_one, _ = sequence_logprobs(tiny_model, *args)
    for greedy in (0.0, torch.zeros(4), torch.tensor([0.0, 1.0, -1.0, 1.0])):
        logprobs, _ = sequence_logprobs(tiny_model, *args, temperature=greedy)
        assert torch.isfinite(logprobs).all()
        assert torch.allclose(logprobs, at_one, atol=1e-6)  # T <= 0 -> 1, no division by zero
    with pytest.raises(ValueError, match="one value per row"):
        sequence_logprobs(tiny_model, *args, temperature=torch.ones(3))


def test_lm_head_never_sees_more_rows_than_a_chunk(tiny_model):
    batch = _left_padded_batch()
    rows_seen: list[int] = []
    hook = tiny_model.lm_head.register_forward_hook(lambda _m, args, _out: rows_seen.append(args[0].shape[0]))
    try:
        logprobs, _ = sequence_logprobs(tiny_model, batch["input_ids"], batch["attention_mask"],
                                        batch["completion_mask"], chunk_tokens=3)
        logprobs.sum().backward()
    finally:
        hook.remove()
    # 4 + 5 + 1 + 0 = 10 completion tokens -> chunks of 3, 3, 3, 1 in forward, each recomputed once in
    # backward (last chunk first); no call ever sees the 10 rows, let alone all N * L = 4 * 11 positions
    assert rows_seen == [3, 3, 3, 1] + [1, 3, 3, 3]


@pytest.mark.parametrize("family", ["qwen2", "gpt2"])  # rotary (relative) and learned absolute positions
def test_left_padding_does_not_change_logprobs(family):
    torch.manual_seed(0)
    if family == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=1, n_head=4, n_positions=64,
                                           bos_token_id=0, eos_token_id=0)).eval()  # eval: no dropout
    else:
        model = _tiny_qwen2()
    samples = [_sample([5, 6, 7], [8, 9, 10]), _sample(list(range(1, 12)), [12, 13])]
    padded = collate(samples, pad_id=0)  # row 0 gets 13 - 6 = 7 pads on the left
    alone = collate(samples[:1], pad_id=0)
    logprobs, _ = sequence_logprobs(model, padded["input_ids"], padded["attention_mask"], padded["completion_mask"])
    expected, _ = sequence_logprobs(model, alone["input_ids"], alone["attention_mask"], alone["completion_mask"])
    # absolute-position models see position 0 at the first real token only if position_ids = cumsum(mask) - 1
    assert torch.allclose(logprobs[0, 7:], expected[0], atol=1e-5)


def test_disable_dropout_makes_train_mode_deterministic():
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=1, n_head=4, n_positions=64,
                                      bos_token_id=0, eos_token_id=0)).train()  # dropouts 0.1 by default
    ids = torch.arange(1, 9)[None]
    assert not torch.equal(gpt2(ids).logits, gpt2(ids).logits)  # dropout on: two passes differ
    # GPT2: embd, attn, resid (x2 in the block: attention and MLP) nn.Dropout modules = 4 (+ float attrs)
    assert disable_dropout(gpt2) >= 4
    assert torch.equal(gpt2(ids).logits, gpt2(ids).logits)
    qwen = Qwen2ForCausalLM(Qwen2Config(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                        num_attention_heads=4, num_key_value_heads=2, attention_dropout=0.5))
    assert disable_dropout(qwen) >= 1
    assert qwen.model.layers[0].self_attn.attention_dropout == 0.0


def test_gemma2_logit_softcapping_is_applied():
    torch.manual_seed(0)
    config = Gemma2Config(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                          num_attention_heads=4, num_key_value_heads=2, head_dim=8, final_logit_softcapping=2.0,
                          attn_implementation="eager")
    model = Gemma2ForCausalLM(config).float()
    batch = _left_padded_batch()
    naive, _ = _naive_logprobs(model, batch)
    chunked, _ = sequence_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
    assert torch.allclose(chunked, naive, atol=1e-5)
    # cap 2 squashes logits into (-2, 2): every log-prob lies above log(e^-2 / (e^-2 + 256 e^2)) = -9.55
    assert chunked[batch["completion_mask"]].min() > -9.55


def test_unsupported_head_and_bad_masks_raise(tiny_model):
    batch = _left_padded_batch()
    args = (batch["input_ids"], batch["attention_mask"])
    first_token = torch.zeros_like(batch["completion_mask"])
    first_token[:, 0] = True
    with pytest.raises(ValueError, match="position 0"):
        sequence_logprobs(tiny_model, *args, first_token)
    with pytest.raises(ValueError, match="same"):
        sequence_logprobs(tiny_model, *args, batch["completion_mask"][:, 1:])
    model = _tiny_qwen2()
    model.config.output_multiplier = 2.0
    with pytest.raises(ValueError, match="output_multiplier"):
        sequence_logprobs(model, *args, batch["completion_mask"])


@pytest.mark.parametrize(
    ("lengths", "max_tokens", "expected"),
    [
        # sorted 1(5), 3(5), 0(3), 2(2): [1, 3] = 5*2 = 10; 0 would make 5*3 = 15 -> new; [0, 2] = 3*2 = 6
        ([3, 5, 2, 5], 10, [[1, 3], [0, 2]]),
        # 20 > 10 alone; [1, 2] = 4*2 = 8
        ([20, 4, 4], 10, [[0], [1, 2]]),
        # 5 * 2 = 10 fits exactly
        ([2, 2, 2, 2, 2], 10, [[0, 1, 2, 3, 4]]),
        # both over budget: one each, longest first
        ([11, 12], 10, [[1], [0]]),
        ([], 10, []),
    ],
)
def test_pack_micro_batches_cases(lengths, max_tokens, expected):
    assert pack_micro_batches(lengths, max_tokens) == expected


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(1, 40), max_size=30), st.integers(1, 100))
def test_pack_micro_batches_covers_every_index_within_budget(lengths, max_tokens):
    batches = pack_micro_batches(lengths, max_tokens)
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) == 1 or max(lengths[i] for i in batch) * len(batch) <= max_tokens
    assert pack_micro_batches(lengths, max_tokens) == batches  # deterministic


def test_pack_micro_batches_rejects_zero_budget():
    with pytest.raises(ValueError, match="max_tokens"):
        pack_micro_batches([1], 0)


def test_collate_left_pads_and_marks_completions():
    samples = [_sample([5, 6, 7], [8, 9], 1.5), _sample([1, 2], [3, 4, 5, 6], -0.5)]
    batch = collate(samples, pad_id=0)
    # lengths 3 + 2 = 5 and 2 + 4 = 6 -> L = 6, the first row gets one pad on the left
    assert batch["input_ids"].tolist() == [[0, 5, 6, 7, 8, 9], [1, 2, 3, 4, 5, 6]]
    assert batch["attention_mask"].tolist() == [[0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]]
    assert batch["completion_mask"].tolist() == [[False, False, False, False, True, True],
                                                 [False, False, True, True, True, True]]
    assert batch["advantages"].tolist() == [1.5, -0.5]
    assert batch["temperatures"].tolist() == [1.0, 1.0]  # RoleSample's default


def test_collate_carries_each_samples_temperature():
    batch = collate([_sample([1], [2], temperature=0.7), _sample([1, 2], [3])], pad_id=0)
    assert batch["temperatures"].dtype == torch.float32
    assert batch["temperatures"].tolist() == pytest.approx([0.7, 1.0])


def test_collate_scores_nothing_of_an_empty_completion_and_rejects_an_empty_prompt():
    batch = collate([_sample([1], [2]), _sample([1, 2], [])], pad_id=7)
    assert batch["input_ids"].tolist() == [[1, 2], [1, 2]]
    assert batch["completion_mask"].tolist() == [[False, True], [False, False]]  # empty completion: nothing scored
    with pytest.raises(ValueError, match="empty prompt"):
        collate([_sample([], [1, 2])], pad_id=0)


def _char_tokenizer(with_pad: bool = True) -> PreTrainedTokenizerFast:
    specials = ["<pad>", "<eos>", "<unk>"] if with_pad else ["<eos>", "<unk>"]
    vocab = {token: i for i, token in enumerate([*specials, *"abcdefghij "])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    pad = {"pad_token": "<pad>"} if with_pad else {}
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>", unk_token="<unk>", **pad)


def test_load_policy_from_local_folder(tmp_path):
    saved = _tiny_qwen2(seed=3)
    saved.save_pretrained(tmp_path)
    _char_tokenizer().save_pretrained(tmp_path)
    cfg = ModelConfig(path=str(tmp_path), dtype="auto", gradient_checkpointing=True,
                      attn_implementation="flash_attention_2")  # not installed on CPU -> eager fallback
    model, tokenizer = load_policy(cfg, torch.device("cpu"))
    assert model.config._attn_implementation == "eager"
    assert model.training
    assert any(getattr(module, "gradient_checkpointing", False) for module in model.modules())
    assert model.dtype == torch.float32  # auto on CPU
    assert torch.equal(model.lm_head.weight, saved.lm_head.weight)
    assert tokenizer.padding_side == "left"
    assert tokenizer.pad_token_id is not None and tokenizer.pad_token_id < VOCAB
    batch = _left_padded_batch()
    logprobs, _ = sequence_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
    logprobs.sum().backward()  # through the checkpointed decoder layers
    assert model.model.layers[0].mlp.up_proj.weight.grad.abs().sum() > 0


def test_load_policy_missing_folder_or_config_names_the_path(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match="nope"):
        load_policy(ModelConfig(path=str(missing)), torch.device("cpu"))
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_policy(ModelConfig(path=str(tmp_path)), torch.device("cpu"))
    with pytest.raises(ValueError, match="model.path is None"):
        load_policy(ModelConfig(path=None), torch.device("cpu"))


def test_ensure_pad_token_falls_back_to_eos():
    tokenizer = _char_tokenizer(with_pad=False)  # <eos> = 0
    ensure_pad_token(tokenizer, num_embeddings=16)
    assert tokenizer.pad_token == "<eos>" and tokenizer.pad_token_id == 0
    tokenizer = _char_tokenizer(with_pad=True)  # <pad> = 0, <eos> = 1; a 0-row embedding fits neither
    with pytest.raises(ValueError, match="pad"):
        ensure_pad_token(tokenizer, num_embeddings=0)
    tokenizer.add_special_tokens({"pad_token": "<newpad>"})  # appended as id 14, outside a 14-row embedding
    ensure_pad_token(tokenizer, num_embeddings=14)
    assert tokenizer.pad_token == "<eos>"


def test_resolve_device_and_dtype():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="train.device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA"):
            resolve_device("cuda")
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(ValueError, match="model.dtype"):
        resolve_dtype("int8", torch.device("cpu"))
