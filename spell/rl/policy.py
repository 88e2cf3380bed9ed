"""The trainable policy: loading and memory-lean per-token log-probs (spec §7.2; stage 12 of §3.1).

Log-probs are taken from the decoder's last hidden states, only at completion positions, in chunks whose
[chunk, vocab] logits are recomputed in backward (``torch.utils.checkpoint``): the full [L, vocab] logits
never exist, in forward or backward (vocab 151,936 x 4,096 positions = 2.5 GB in fp32 per sequence).
They are ``log_softmax(logits / T)`` at each sequence's sampling temperature T, the distribution it was drawn
from (as the authors' verl code and TRL do).
Shape legend: N sequences, L = padded prompt + completion length, H hidden size, V vocab, M scored tokens.
Masks: True / 1 = counts. Sequences are LEFT padded; position t holds log p(input_ids[t] | input_ids[<t]).
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from spell.config import ConfigError, ModelConfig

logger = logging.getLogger(__name__)

# Name of the FSDP2-registered forward method that runs decoder_logprobs on a sharded model (spell.rl.sharding).
FSDP_LOGPROB_METHOD = "spell_decoder_logprobs"
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Config keys of output heads that transform logits in ways sequence_logprobs does not reproduce.
_UNSUPPORTED_HEAD_KEYS = ("output_multiplier", "output_mult", "mup_output_alpha")


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda if available else cpu; ``cpu``; ``cuda`` (must be available).

    Raises:
        ValueError: unknown name, or ``cuda`` requested without a CUDA device.
    """
    match name:
        case "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        case "cpu":
            return torch.device("cpu")
        case "cuda":
            if not torch.cuda.is_available():
                raise ConfigError("train.device=cuda but no CUDA device is visible; use train.device=cpu or auto")
            return torch.device("cuda")
    raise ValueError(f"train.device={name!r}: use auto, cpu or cuda")


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """The PARAMETER dtype: ``auto`` -> float32 (the trainer computes in bf16 under autocast on a GPU that
    supports it, see :func:`autocast_dtype`); otherwise the named dtype.

    Pure bf16 parameters with AdamW lose small updates (at lr 2e-6 most steps round away), so ``auto`` keeps
    fp32 master weights; ``bfloat16`` is for memory-bound experiments that accept that.
    """
    if dtype == "auto":
        return torch.float32
    if dtype not in _DTYPES:
        raise ValueError(f"model.dtype={dtype!r}: use auto, float32, bfloat16 or float16")
    return _DTYPES[dtype]


def autocast_dtype(dtype: str, device: torch.device) -> torch.dtype | None:
    """Compute dtype for ``torch.autocast``: bf16 on a bf16-capable GPU with ``model.dtype=auto``, else None."""
    if dtype == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def load_policy(model_cfg: ModelConfig, device: torch.device, seed: int = 0) -> tuple[nn.Module, Any]:
    """Load a causal LM and its tokenizer from a local Hugging Face folder.

    The tokenizer pads on the left (prompts are right-aligned for generation and
    :func:`spell.rl.batching.collate`); a missing pad token falls back to EOS. Dropout is disabled
    (:func:`disable_dropout`). Gradient checkpointing uses the non-reentrant implementation. An
    ``attn_implementation`` the model or install does not support falls back to ``eager`` with a warning.

    ``model_cfg.rope_scaling`` (e.g. ``yarn:4``) goes to ``from_pretrained`` in the model's config
    (:func:`_rope_scaled_config`). With ``model_cfg.lora_rank > 0`` the model is wrapped by PEFT
    (:func:`apply_lora`): only the adapter weights train. Pure low-precision parameters (``model.dtype``
    ``bfloat16`` / ``float16``) load with a warning, since AdamW then loses small updates.

    Args:
        model_cfg: the ``model`` config section. ``path`` must be set (the caller resolves the built-in
            default policy to a folder before calling).
        device: where to put the model.
        seed: seeds the LoRA adapters' initialisation (the same on every rank).

    Returns:
        ``(model, tokenizer)``, model in train mode on ``device``.

    Raises:
        FileNotFoundError: the folder or its config.json is missing.
        ValueError: ``path`` is None, the tokenizer has no usable pad or EOS token, or the output head is
            one :func:`sequence_logprobs` cannot reproduce.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = _check_model_folder(model_cfg.path)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    tokenizer.padding_side = "left"
    kwargs = {_dtype_kwarg(): resolve_dtype(model_cfg.dtype, device), "local_files_only": True}
    if model_cfg.rope_scaling is not None:
        kwargs["config"] = _rope_scaled_config(path, model_cfg.rope_scaling)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, attn_implementation=model_cfg.attn_implementation,
                                                     **kwargs)
    except (ValueError, ImportError) as err:
        if model_cfg.attn_implementation == "eager":
            raise
        logger.warning("attn_implementation=%s unavailable (%s); falling back to eager",
                       model_cfg.attn_implementation, str(err).splitlines()[0])
        model = AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager", **kwargs)
    model.to(device)
    ensure_pad_token(tokenizer, model.get_input_embeddings().num_embeddings)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    model.config.use_cache = False  # training forward passes never need the KV cache
    if model_cfg.gradient_checkpointing:
        _enable_checkpointing(model)
    _logit_head(model)  # fail at load time, not mid-training, on an unsupported head
    if model_cfg.dtype in ("bfloat16", "float16"):
        logger.warning("model.dtype=%s: weights and AdamW state in %s lose every update smaller than about 1/256 "
                       "of a weight (measured: at lr 2e-6 only 3.8%% of a 7B model's weights changed in 10 steps). "
                       "Use model.dtype=auto for fp32 master weights with bf16 compute", model_cfg.dtype,
                       model_cfg.dtype)
    if model_cfg.lora_rank > 0:
        model = apply_lora(model, model_cfg, seed)
    disable_dropout(model)
    model.train()  # for activation checkpointing; dropout is off, so train and eval forwards agree
    return model, tokenizer


def apply_lora(model: nn.Module, model_cfg: ModelConfig, seed: int = 0) -> nn.Module:
    """Wrap ``model`` with PEFT LoRA adapters (``lora_rank``, ``lora_alpha``, ``target_modules``); base frozen.

    ``target_modules: [all-linear]`` is PEFT's ``"all-linear"`` (every linear layer but the output head).
    The adapters are initialised under ``seed`` (B = 0, so the wrapped model starts equal to the base one).

    Raises:
        ImportError: PEFT is not installed (it is a dependency of spell-rl).
    """
    from peft import LoraConfig, get_peft_model

    targets = list(model_cfg.target_modules)
    lora = LoraConfig(r=model_cfg.lora_rank, lora_alpha=model_cfg.lora_alpha, lora_dropout=0.0, bias="none",
                      target_modules="all-linear" if targets == ["all-linear"] else targets, task_type="CAUSAL_LM")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = get_peft_model(model, lora)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    logger.info("LoRA rank %d on %s: %d of %d parameters trainable (%.2f%%)", model_cfg.lora_rank, targets,
                trainable, total, 100.0 * trainable / total)
    return model


def disable_dropout(model: nn.Module) -> int:
    """Set every dropout probability to 0 (``nn.Dropout`` modules and float ``*dropout*`` attributes).

    Policy-gradient log-probs must be those of the policy that sampled (generation runs without dropout),
    so training forwards run dropout-free, as TRL does by default. Qwen2.5's dropouts are 0 already.

    Returns:
        How many dropouts were changed.
    """
    changed = 0
    for module in model.modules():
        if isinstance(module, nn.Dropout) and module.p != 0.0:
            module.p, changed = 0.0, changed + 1
        for name, value in list(vars(module).items()):
            if "dropout" in name and isinstance(value, float) and value != 0.0:
                setattr(module, name, 0.0)
                changed += 1
    return changed


def ensure_pad_token(tokenizer: Any, num_embeddings: int) -> None:
    """Make the tokenizer's pad token usable: fall back to EOS when it is missing or outside the embedding.

    A pad id >= ``num_embeddings`` happens when a tokenizer class adds its own default pad token on reload
    (transformers 5 reloads a ``qwen2`` folder with ``Qwen2Tokenizer``, which appends ``<|endoftext|>``).

    Raises:
        ValueError: neither a usable pad token nor an EOS token inside the embedding.
    """
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token is not None else None
    if pad_id is not None and 0 <= pad_id < num_embeddings:
        return
    eos_id = tokenizer.eos_token_id if tokenizer.eos_token is not None else None
    if eos_id is None or not 0 <= eos_id < num_embeddings:
        raise ValueError(f"tokenizer has no usable pad token (id {pad_id}) and no EOS token inside the "
                         f"{num_embeddings}-row embedding; add a pad or EOS token to the tokenizer and save it again")
    if pad_id is not None:
        logger.warning("pad token id %d is outside the %d-row embedding; padding with EOS", pad_id, num_embeddings)
    tokenizer.pad_token = tokenizer.eos_token


def _dtype_kwarg() -> str:
    """``dtype`` since transformers 4.56; older releases only know ``torch_dtype``."""
    import transformers

    major, minor = (int(part) for part in transformers.__version__.split(".")[:2])
    return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"


def _enable_checkpointing(model: nn.Module) -> None:
    """Non-reentrant activation checkpointing of the decoder layers (renamed in transformers 5.x)."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def _rope_scaled_config(path: str, rope_scaling: str) -> Any:
    """The model's config with ``model.rope_scaling`` applied (:func:`spell.config.run.rope_scaling_fields`), in
    the form the installed transformers reads: ``rope_parameters`` (5.x) or ``rope_scaling`` (4.x)."""
    from transformers import AutoConfig

    from spell.config.run import rope_scaling_fields

    config = AutoConfig.from_pretrained(path, local_files_only=True)
    try:
        fields = rope_scaling_fields(config.to_dict(), rope_scaling)
    except ValueError as err:
        raise ConfigError(f"model.rope_scaling={rope_scaling!r}: {err}") from None
    scaling = fields["rope_scaling"]
    if hasattr(config, "rope_parameters"):
        config.rope_parameters = {key: value for key, value in scaling.items() if key != "type"}
    else:
        config.rope_scaling = {key: value for key, value in scaling.items() if key != "rope_theta"}
    config.max_position_embeddings = fields["max_position_embeddings"]
    logger.info("RoPE scaling %s: %d trained positions attend %d", rope_scaling,
                scaling["original_max_position_embeddings"], config.max_position_embeddings)
    return config


def _check_model_folder(path: str | None) -> str:
    if path is None:
        raise ValueError("model.path is None: resolve the built-in default policy to a folder before load_policy")
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"model.path={path!r} is not a folder; point model.path at a local Hugging Face "
                                "model folder (config.json + weights + tokenizer); models are never downloaded")
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder / 'config.json'} is missing; model.path must be a folder written by "
                                "save_pretrained (config.json + weights + tokenizer files)")
    return str(folder)


def _logit_head(model: nn.Module) -> tuple[nn.Linear, float, float | None]:
    """The output projection and its post-processing: ``(lm_head, scale, softcap)``.

    logits = softcap * tanh(scale * (h @ W.T) / softcap) when softcap is set, else scale * (h @ W.T).
    Covers plain and tied heads (Qwen, Llama, Mistral), Gemma 2/3 soft-capping, Cohere ``logit_scale`` and
    Granite ``logits_scaling``; raises on a head this formula does not describe.
    """
    head = model.get_output_embeddings()
    if not isinstance(head, nn.Linear):
        raise ValueError(f"{type(model).__name__}: output head {type(head).__name__} is not nn.Linear; "
                         "sequence_logprobs supports linear LM heads only")
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    for key in _UNSUPPORTED_HEAD_KEYS:
        if getattr(config, key, None) not in (None, 1, 1.0):
            raise ValueError(f"{type(model).__name__}: config.{key} rescales the logits in a way "
                             "sequence_logprobs does not reproduce")
    scale = 1.0
    if getattr(config, "logit_scale", None) is not None:  # Cohere: logits * logit_scale
        scale *= float(config.logit_scale)
    if getattr(config, "logits_scaling", None) is not None:  # Granite: logits / logits_scaling
        scale /= float(config.logits_scaling)
    softcap = getattr(config, "final_logit_softcapping", None)  # Gemma 2/3: cap * tanh(logits / cap)
    return head, scale, (float(softcap) if softcap else None)


def _chunk_logprobs(
    hidden: torch.Tensor, targets: torch.Tensor, head: nn.Linear, scale: float, softcap: float | None,
    with_entropy: bool, temperatures: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log p_T(target) and entropy (or None) for one chunk of hidden states.

    Shapes: hidden [C, H], targets [C], temperatures [C] (None = 1) -> [C], [C].
    """
    logits = head(hidden).float()  # [C, V]
    if scale != 1.0:
        logits = logits * scale
    if softcap is not None:
        logits = softcap * torch.tanh(logits / softcap)
    # Temperature last, on the model's final fp32 logits (scale and softcap are part of the model's forward),
    # exactly as the sampler does: spell.rl.engine.hf.sample_next_token takes softmax(logits.float() / T).
    if temperatures is not None:
        logits = logits / temperatures[:, None]
    logprobs_all = torch.log_softmax(logits, dim=-1)  # [C, V]
    token_logprobs = logprobs_all.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    if not with_entropy:
        return token_logprobs, None
    return token_logprobs, -(logprobs_all.exp() * logprobs_all).sum(-1)


def sequence_logprobs(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    completion_mask: torch.Tensor,
    chunk_tokens: int = 1024,
    with_entropy: bool = False,
    *,
    temperature: float | torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-token log-probs (and entropy) of the completion tokens, without materialising full logits.

    The decoder runs once over the whole batch; then only the hidden states that predict completion tokens
    (the position before each) are gathered into a flat [M, H] tensor and sent through the LM head in chunks
    of ``chunk_tokens`` rows. Each chunk is wrapped in non-reentrant ``torch.utils.checkpoint``, so backward
    recomputes its [chunk, V] logits instead of keeping them: peak head memory is O(chunk_tokens * V), not
    O(N * L * V). Positions follow the left-padding convention: ``position_ids = cumsum(attention_mask) - 1``.
    Log-probs and entropy are those of ``softmax(logits / T)``, T being the temperature each row was sampled at,
    applied after the head's scale and soft-cap as the sampler does. A temperature ``<= 0`` (greedy decoding)
    is scored at T = 1: argmax picks are the T -> 0 limit, a point mass with no softmax to match, and dividing
    by 0 would give inf/NaN; T = 1 is the model's own distribution.

    Args:
        model: a causal LM (``get_decoder()`` returning the transformer, ``get_output_embeddings()`` a Linear).
        input_ids: prompt + completion ids, left padded. Shape: [N, L].
        attention_mask: 1 on real tokens, 0 on padding. Shape: [N, L].
        completion_mask: True on completion tokens, the ones scored. Never true at position 0. Shape: [N, L].
        chunk_tokens: scored positions per LM-head chunk (``grpo.logprob_chunk_tokens``).
        with_entropy: also return the entropy of the next-token distribution at each scored position.
        temperature: the sampling temperature: None (= 1), one float for every row, or one per row (the
            ``temperatures`` of :func:`spell.rl.batching.collate`). Shape: [N].

    Returns:
        ``(logprobs, entropy)``, float32, aligned with ``input_ids``: ``logprobs[n, t] = log p(input_ids[n, t]
        | input_ids[n, <t])`` where ``completion_mask[n, t]``, else 0. ``entropy`` likewise, or None.
        Shape: [N, L] each. With no completion token at all they are zeros without grad: skip such batches.

    Raises:
        ValueError: shape mismatch (also of ``temperature``), ``chunk_tokens < 1``, or a completion token at
            position 0.
    """
    if input_ids.shape != attention_mask.shape or input_ids.shape != completion_mask.shape:
        raise ValueError(f"input_ids {tuple(input_ids.shape)}, attention_mask {tuple(attention_mask.shape)} and "
                         f"completion_mask {tuple(completion_mask.shape)} must have the same [N, L] shape")
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens={chunk_tokens}: must be >= 1")
    completion_mask = completion_mask.bool()
    if completion_mask[:, 0].any():
        raise ValueError("completion_mask is true at position 0: a completion token needs a prompt before it")
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    scored = completion_mask[:, 1:]  # [N, L-1]: hidden at t-1 predicts the token at t
    num_rows, length = input_ids.shape
    flat_positions = torch.arange(num_rows * length, device=input_ids.device).view(num_rows, length)
    hidden_index = flat_positions[:, :-1][scored]  # [M]: row-major, as boolean indexing takes them
    flat_lp, flat_entropy = model_forward(model)(input_ids, attention_mask, position_ids, hidden_index,
                                            input_ids[:, 1:][scored], _flat_temperatures(temperature, scored),
                                            chunk_tokens, with_entropy)
    logprobs = _scatter_scored(flat_lp, scored)
    return logprobs, (_scatter_scored(flat_entropy, scored) if with_entropy else None)


def model_forward(model: nn.Module):
    """:func:`decoder_logprobs` bound to ``model``. FSDP2 (spell.rl.sharding) registers it as a forward method of
    the sharded root, so the root's own parameters (embeddings, norm, output head) are gathered for it."""
    return getattr(model, FSDP_LOGPROB_METHOD, None) or functools.partial(decoder_logprobs, model)


def decoder_logprobs(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    position_ids: torch.Tensor,
    hidden_index: torch.Tensor,
    targets: torch.Tensor,
    temperatures: torch.Tensor | None,
    chunk_tokens: int,
    with_entropy: bool,
    **attention_kwargs,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Decoder once over the batch, then the LM head in chunks at the scored positions only.

    Shapes: input_ids / position_ids [R, T]; attention_mask [R, T] (1 = real token) or [R, 1, T, T] (the
    shared-prefix layout); hidden_index [M], flat ``row * T + position`` of the hidden state that predicts each
    scored token; targets [M]; temperatures [M] or None; ``attention_kwargs`` go to every attention call (the
    row layout of :mod:`spell.rl.prefix_attention`, whose mask is then [R, 1, Q, T]). Returns flat [M] log-probs
    and entropies (or None); with M = 0, zeros without grad.
    """
    head, scale, softcap = _logit_head(model)
    decoder = model.get_decoder()
    hidden = decoder(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                     use_cache=False, **attention_kwargs).last_hidden_state  # [R, T, H]
    flat_hidden = hidden.reshape(-1, hidden.shape[-1])[hidden_index]  # [M, H]
    logprob_chunks, entropy_chunks = [], []
    for start in range(0, flat_hidden.shape[0], chunk_tokens):
        chunk = slice(start, start + chunk_tokens)
        chunk_temperatures = None if temperatures is None else temperatures[chunk]
        token_logprobs, entropy = checkpoint(_chunk_logprobs, flat_hidden[chunk], targets[chunk], head, scale,
                                             softcap, with_entropy, chunk_temperatures, use_reentrant=False)
        logprob_chunks.append(token_logprobs)
        entropy_chunks.append(entropy)
    if not logprob_chunks:
        empty = torch.zeros(0, dtype=torch.float32, device=hidden.device)
        return empty, (empty if with_entropy else None)
    return torch.cat(logprob_chunks), (torch.cat(entropy_chunks) if with_entropy else None)


def _flat_temperatures(temperature: float | torch.Tensor | None, scored: torch.Tensor) -> torch.Tensor | None:
    """Each scored position's temperature, in the row-major order ``hidden[:, :-1][scored]`` takes them.

    None (no division at all) for None or a single T of 1 or <= 0; in a [N] tensor, T <= 0 (greedy) becomes 1,
    see :func:`sequence_logprobs`.
    Shapes: temperature [N] or scalar, scored [N, L-1] -> [M].
    """
    if temperature is None:
        return None
    if not isinstance(temperature, torch.Tensor):
        if temperature == 1.0 or temperature <= 0:
            return None
        temperature = torch.full((scored.shape[0],), float(temperature))
    if temperature.shape != (scored.shape[0],):
        raise ValueError(f"temperature {tuple(temperature.shape)} must have one value per row: ({scored.shape[0]},)")
    rows = temperature.to(device=scored.device, dtype=torch.float32)
    rows = torch.where(rows > 0, rows, torch.ones_like(rows))  # [N]
    return rows[:, None].expand_as(scored)[scored]  # [M]


def _scatter_scored(flat: torch.Tensor, scored: torch.Tensor) -> torch.Tensor:
    """Put the flat [M] values back at their [N, L] positions (row-major, as boolean indexing took them)."""
    num_rows, length = scored.shape[0], scored.shape[1] + 1
    tail = torch.zeros(num_rows, length - 1, dtype=torch.float32, device=scored.device)
    tail = tail.masked_scatter(scored, flat)
    return torch.cat([tail.new_zeros(num_rows, 1), tail], dim=1)  # position 0 has no prefix: 0
