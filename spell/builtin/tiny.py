"""Small real transformers policies built offline: a byte-level BPE tokenizer and a random Qwen2.

Used by the tests and by the built-in default policy (``model.path: null``). Nothing is downloaded.
The tokenizer is trained with Qwen2's own normaliser and pre-tokenizer, so transformers 5 (which reloads a
``qwen2`` folder with ``Qwen2Tokenizer`` and rebuilds that pipeline) gives identical ids after a reload.
Chat format is ChatML; an assistant turn ends with ``<|im_end|>``, which is the generation EOS.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, trainers
from tokenizers.models import BPE
from transformers import GenerationConfig, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

logger = logging.getLogger(__name__)

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = (ENDOFTEXT, IM_START, IM_END)  # ids 0, 1, 2

# Qwen2's split pattern (contractions, letter runs, single digits, punctuation runs, newlines, spaces).
QWEN2_SPLIT_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"""
    r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

# ChatML: every turn is "<|im_start|>{role}\n{content}<|im_end|>\n"; the generation prompt opens an assistant turn.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Words of the chat scaffolding, weighted as if seen in many prompts, so they become whole tokens even in a
# tiny vocabulary (they cost about 15 merges).
_SCAFFOLD_TEXT = "system\nuser\nassistant\n"
_SCAFFOLD_WEIGHT = 1000


def _training_texts(texts: Iterable[str]) -> Iterator[str]:
    yield from [_SCAFFOLD_TEXT] * _SCAFFOLD_WEIGHT
    yield from texts


def build_tiny_tokenizer(texts: Iterable[str], vocab_size: int = 1024) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on ``texts`` with a ChatML chat template.

    Special tokens: ``<|endoftext|>`` (id 0; pad), ``<|im_start|>`` (1), ``<|im_end|>`` (2; eos, ends an
    assistant turn). No BOS is added. Padding side is left (generation batches).

    Args:
        texts: training texts (documents, prompts); any iterable, consumed once.
        vocab_size: target vocabulary size incl. the 256 byte symbols and 3 special tokens
            (so at least 259 tokens whatever is asked).

    Returns:
        A fast tokenizer; ``len(tokenizer)`` is its vocabulary size.
    """
    tok = Tokenizer(BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_training_texts(texts), trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        unk_token=None,
        additional_special_tokens=[IM_START],
        padding_side="left",
        chat_template=CHATML_TEMPLATE,
    )
    tokenizer.padding_side = "left"
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def build_tiny_model(
    tokenizer: PreTrainedTokenizerFast,
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int | None = None,
    max_position_embeddings: int = 4096,
    initializer_range: float = 0.02,
    seed: int = 0,
) -> Qwen2ForCausalLM:
    """A randomly initialised Qwen2 causal LM sized for ``tokenizer`` (fp32).

    Args:
        tokenizer: gives the vocabulary size and the eos/pad ids.
        hidden_size: model width; must be divisible by ``num_heads``.
        num_layers: decoder layers.
        num_heads: attention heads.
        num_kv_heads: key/value heads (grouped-query attention); must divide ``num_heads``.
        intermediate_size: MLP width; ``None`` = ``4 * hidden_size``.
        max_position_embeddings: longest sequence the config admits (RoPE works beyond it too).
        initializer_range: std of the normal weight init; tests use ~0.5 so a random model's greedy
            output varies from token to token instead of repeating one token.
        seed: ``torch.manual_seed`` for the initialisation (the global RNG state is restored after).

    Returns:
        A ``Qwen2ForCausalLM`` with tied input/output embeddings. Its generation config stops on
        ``<|im_end|>`` and ``<|endoftext|>``.
    """
    eos_id = tokenizer.convert_tokens_to_ids(IM_END)
    pad_id = tokenizer.pad_token_id
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or 4 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=max_position_embeddings,
        initializer_range=initializer_range,
        tie_word_embeddings=True,
        bos_token_id=pad_id,  # never inserted by the tokenizer; Qwen2 convention
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        use_cache=True,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=pad_id, eos_token_id=sorted({eos_id, pad_id}), pad_token_id=pad_id
    )
    return model


def save_policy(model: Qwen2ForCausalLM, tokenizer: PreTrainedTokenizerFast, path: str | Path) -> Path:
    """Save model (safetensors) and tokenizer to ``path`` so ``from_pretrained(path)`` reloads them offline.

    For a Qwen2 model the tokenizer config names ``Qwen2Tokenizer``, the class transformers picks for a
    ``qwen2`` folder anyway (4.x loads its fast variant from ``tokenizer.json``; 5.x rebuilds the same
    pipeline, which :func:`build_tiny_tokenizer` trains with), so every loader sees the same ids.

    Args:
        model: the policy.
        tokenizer: its tokenizer.
        path: target folder (created).

    Returns:
        The folder path.
    """
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    config_file = out / "tokenizer_config.json"
    if getattr(model.config, "model_type", None) == "qwen2" and config_file.is_file():
        config = json.loads(config_file.read_text(encoding="utf-8"))
        config["tokenizer_class"] = "Qwen2Tokenizer"
        config_file.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    logger.info("saved policy to %s", out)
    return out
