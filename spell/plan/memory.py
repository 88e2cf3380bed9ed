"""Per-GPU memory of one rank of a run, from the config and the model's sizes alone (no weights loaded).

A step has two phases that never overlap: rollouts (the engine's KV cache and prefill) and the update
(gradients, activations of one micro-batch, the chunked log-prob head). What lives through both (weights,
AdamW moments, the rollout copy of the weights) is counted once; the peak is the larger phase on top of it.
Every term follows the code it describes (spell.trainer, spell.rl.policy / shared_prefix / sharding,
spell.rl.engine.hf); the formulas are in each function and in README ("Memory planner").
Units: bytes. Shape legend: P prompt tokens, C new tokens, G samples per prompt, B prompts per engine batch,
T tokens of the largest micro-batch, V vocabulary, h hidden, I MLP width, q = heads x head_dim.
"""

from __future__ import annotations

from dataclasses import dataclass

from spell.config import SpellConfig
from spell.config.run import parse_rope_scaling
from spell.plan.arch import ModelArch
from spell.types import EngineKind

GIB = 1024**3
CUDA_OVERHEAD = 1.0 * GIB  # CUDA context, cuBLAS / NCCL workspaces of one process (typical, not measured here)
VLLM_OVERHEAD = 2.0 * GIB  # vLLM's profiled activation peak and CUDA graphs inside its reservation (typical)
VERIFIER_PROMPT_EXTRA = 1024  # template + question + reference around the judged answer, in tokens
PHASES = ("always", "update", "step", "rollout")


@dataclass(frozen=True, slots=True)
class Precision:
    """Bytes per element. ``param``: stored weights, gradients and AdamW moments; ``compute``: activations
    and the rollout copy; ``residual``: the residual stream between layers; ``mode`` names the layout."""

    param: int
    compute: int
    residual: int
    mode: str


@dataclass(frozen=True, slots=True)
class Item:
    """One line of the breakdown: ``phase`` is always, update (forward/backward), step (AdamW) or rollout."""

    name: str
    phase: str
    bytes: float


@dataclass(frozen=True, slots=True)
class MemoryPlan:
    """The breakdown for one rank. ``host_bytes``: state kept in host memory per rank (CPU offload)."""

    items: tuple[Item, ...]
    world: int
    on_gpu: bool
    micro_batch_tokens: int
    host_bytes: float = 0.0
    notes: tuple[str, ...] = ()

    def total(self, phase: str) -> float:
        """Bytes alive in ``phase``: what is always there plus that phase's own items."""
        return sum(item.bytes for item in self.items if item.phase in ("always", phase))

    @property
    def peak_phase(self) -> str:
        return max(PHASES[1:], key=self.total)

    @property
    def peak(self) -> float:
        return self.total(self.peak_phase)


def precision(cfg: SpellConfig, world: int) -> Precision:
    """The dtypes a run uses (spell.rl.policy.resolve_dtype / autocast_dtype, spell.rl.sharding).

    ``model.dtype=auto``: fp32 weights and AdamW; on a GPU, one process computes under bf16 autocast (the
    residual stream stays fp32: fp32 embeddings plus bf16 layer outputs), FSDP2 casts the gathered weights to
    bf16 (all activations bf16). On CPU everything is fp32. Pure ``bfloat16`` / ``float16``: 2 bytes throughout.
    """
    on_gpu = cfg.train.device != "cpu"
    if cfg.model.dtype == "auto":
        if not on_gpu:
            return Precision(4, 4, 4, "fp32")
        return Precision(4, 2, 2, "fsdp-bf16") if world > 1 else Precision(4, 2, 4, "autocast")
    size = 4 if cfg.model.dtype == "float32" else 2
    return Precision(size, size, size, cfg.model.dtype)


def layer_activation_bytes(arch: ModelArch, p: Precision) -> int:
    """Bytes one decoder layer keeps for backward, per token (transformers' Qwen2 / Llama layer).

    Two RMSNorms, each: an fp32 residual stream keeps x, x * rsqrt(var) and weight * (...) in fp32 (12h), plus
    a bf16 cast for the next linear under autocast (2h); a bf16 residual keeps the fp32 upcast of x (4h) and two
    bf16 results (2 x 2h). Attention: q, k and v after RoPE (k, v repeated to q's heads), the attention output and
    its contiguous copy for o_proj: 5q. MLP: gate, up, silu(gate) and their product: 4I.
    fp32 (CPU): 24h + 20q + 16I; autocast: 28h + 10q + 8I; bf16: 16h + 10q + 8I.
    """
    h, q, i, c = arch.hidden, arch.heads * arch.head_dim, arch.active_intermediate, p.compute
    norm = 12 * h + (2 * h if c < 4 else 0) if p.residual == 4 else 4 * h + 2 * c * h
    return 2 * norm + 5 * q * c + 4 * i * c


def activation_bytes(arch: ModelArch, p: Precision, tokens: int, checkpointing: bool) -> tuple[int, int]:
    """(kept through the forward, working set of the backward) for a micro-batch of ``tokens``.

    Checkpointing keeps each layer's input (h x residual bytes per token and layer) and recomputes one layer at
    a time in backward (that layer's activations come back for a moment). Without it every layer keeps all of
    its activations. Outside the layers: the final norm, the last hidden states and the gathered hidden states
    of the scored positions (4h). Backward also holds the gradients of two [T, I] MLP tensors at a time.
    """
    per_layer = layer_activation_bytes(arch, p)
    edges = 4 * arch.hidden * p.residual
    working = 2 * arch.active_intermediate * p.compute
    if checkpointing:
        return tokens * (arch.layers * arch.hidden * p.residual + edges), tokens * (per_layer + working)
    return tokens * (arch.layers * per_layer + edges), tokens * working


def head_bytes(arch: ModelArch, chunk_tokens: int, tokens: int) -> int:
    """The chunked log-prob head (spell.rl.policy.decoder_logprobs): never [T, V] logits, only [chunk, V] fp32
    ones, recomputed in backward. About 6 such tensors at once: logits, /T, log-softmax, exp, p log p for the
    entropy, and their gradients."""
    return 6 * min(chunk_tokens, tokens) * arch.vocab * 4


def micro_batch_shape(cfg: SpellConfig) -> tuple[int, int, int]:
    """(T, P, C): the largest micro-batch's padded tokens, the longest prompt and the longest trained completion.

    Micro-batches are packed to ``grpo.micro_batch_tokens``; a sample (prompt + completion) longer than that
    gets a micro-batch of its own (spell.rl.batching.pack_micro_batches, spell.rl.shared_prefix.prompt_units).
    """
    prompt = cfg.data.max_prompt_tokens
    completion = max(cfg.responder.max_new_tokens, cfg.questioner.max_new_tokens)
    return max(cfg.grpo.micro_batch_tokens, prompt + completion), prompt, completion


def mask_bytes(cfg: SpellConfig, tokens: int, prompt: int, completion: int, on_gpu: bool) -> int:
    """Attention masks of one micro-batch. Shared prefix (spell.rl.shared_prefix): the completions' [Q, T]
    boolean mask, Q = T - P (on CPU also its fp32 additive copy: 5 bytes). One sequence per sample:
    transformers' boolean [N, 1, L, L] padding mask, N x L = T."""
    if cfg.grpo.shared_prefix:
        return max(tokens - prompt, 0) * tokens * (1 if on_gpu else 5)
    return tokens * min(tokens, prompt + completion)


def training_items(cfg: SpellConfig, arch: ModelArch, world: int) -> tuple[list[Item], float]:
    """Weights, gradients, AdamW and the update's transients of one rank; also the bytes offloaded to host."""
    p = precision(cfg, world)
    on_gpu = cfg.train.device != "cpu"
    lora = cfg.model.lora_rank > 0
    total = arch.params + (arch.lora_params(cfg.model.lora_rank, cfg.model.target_modules) if lora else 0)
    trained = arch.lora_params(cfg.model.lora_rank, cfg.model.target_modules) if lora else arch.params
    offload = cfg.train.fsdp_cpu_offload and world > 1
    shard = f", 1/{world} shard" if world > 1 else ""
    weights, grads, moments = total * p.param / world, trained * p.param / world, 2 * trained * p.param / world
    items = [Item(f"weights ({_dtype(p.param)}{shard})", "always", 0 if offload else weights),
             Item(f"AdamW moments (2 x {_dtype(p.param)}{shard})", "always", 0 if offload else moments),
             Item(f"gradients ({_dtype(p.param)}{shard})", "update", 0 if offload else grads)]
    if cfg.grpo.kl_coef > 0 and not lora:
        items.append(Item(f"reference model ({_dtype(p.param)}{shard})", "always", weights))
    tokens, prompt, completion = micro_batch_shape(cfg)
    kept, working = activation_bytes(arch, p, tokens, cfg.model.gradient_checkpointing)
    how = "checkpointed" if cfg.model.gradient_checkpointing else "no checkpointing"
    items += [Item(f"activations ({how}, {tokens:,} tokens)", "update", kept + working),
              Item(f"log-prob head ({cfg.grpo.logprob_chunk_tokens}-token chunks)", "update",
                   head_bytes(arch, cfg.grpo.logprob_chunk_tokens, tokens)),
              Item("attention masks" + (" (shared prefix)" if cfg.grpo.shared_prefix else ""), "update",
                   mask_bytes(cfg, tokens, prompt, completion, on_gpu))]
    if world > 1:  # FSDP2: two gathered layers (one prefetched) and the root (embedding, head) in compute dtype
        gathered = (2 * arch.layer_params + arch.root_params) * p.compute
        unsharded_grads = 0 if lora else arch.root_params * p.compute + arch.layer_params * 4
        items.append(Item("FSDP2 gathered layers + root, their gradients", "update", gathered + unsharded_grads))
        if not cfg.train.fsdp_reduce_every_micro_batch:  # no reduce-scatter until the last micro-batch
            items.append(Item("unsharded gradients kept between micro-batches (fp32)", "update", trained * 4))
    elif p.mode == "autocast":  # autocast caches one bf16 copy of every trainable weight for the whole step
        items.append(Item("bf16 weight copies (autocast cache)", "update", trained * 2))
    # AdamW's step: the gradients are still there; the foreach implementation (CUDA) holds one moment-sized
    # temporary, the per-tensor one (CPU) one tensor at a time (the embedding at most).
    step_temp = trained * p.param / world if on_gpu else arch.vocab * arch.hidden * p.param
    items += [Item("gradients during the AdamW step", "step", 0 if offload else grads),
              Item("AdamW step temporaries", "step", 0 if offload else step_temp)]
    if on_gpu:
        items.append(Item("CUDA context, workspaces", "always", CUDA_OVERHEAD))
    return items, (weights + grads + moments if offload else 0.0)


def rollout_items(cfg: SpellConfig, arch: ModelArch, world: int,
                  gpu_memory: float | None) -> tuple[list[Item], list[str]]:
    """The engine's memory: its weights, the KV cache of one engine batch and the prefill/decode working set."""
    p = precision(cfg, world)
    if cfg.engine.kind == EngineKind.VLLM:
        return _vllm_items(cfg, arch, gpu_memory)
    items = []
    compute = p.compute  # the engine runs under the trainer's compute dtype (autocast or the bf16 replica)
    if world > 1:  # each rank samples from an unsharded replica (spell.rl.sharding.rollout_replica)
        items.append(Item(f"rollout replica ({_dtype(compute)})", "always", arch.params * compute))
    elif p.mode == "autocast":  # the engine's autocast caches bf16 copies of the trainable fp32 weights (LoRA:
        # the adapters; frozen weights are cast per use) while it generates
        lora = cfg.model.lora_rank > 0
        trained = arch.lora_params(cfg.model.lora_rank, cfg.model.target_modules) if lora else arch.params
        items.append(Item("bf16 weight copies (rollout autocast)", "rollout", trained * 2))
    kv, working, label = max((_hf_rollout(cfg, arch, compute, role) for role in _roles(cfg)),
                             key=lambda found: (found[0] + found[1], found[0]))
    items += [Item(f"KV cache (HF engine, {label})", "rollout", kv),
              Item("prefill / decode working set", "rollout", working)]
    return items, []


def _roles(cfg: SpellConfig) -> list[tuple[str, int, int, int]]:
    """(label, prompt tokens, new tokens, samples per prompt) of each generating role."""
    prompt = cfg.data.max_prompt_tokens
    verifier_prompt = min(prompt, cfg.responder.max_new_tokens + VERIFIER_PROMPT_EXTRA)
    return [("questioner", prompt, cfg.questioner.max_new_tokens, 1),
            ("responder", prompt, cfg.responder.max_new_tokens, cfg.responder.group_size),
            ("verifier", verifier_prompt, cfg.verifier.max_new_tokens, cfg.verifier.num_votes)]


def _hf_rollout(cfg: SpellConfig, arch: ModelArch, dtype: int,
                role: tuple[str, int, int, int]) -> tuple[int, int, str]:
    """(KV bytes, working bytes, label) of one batch of ``engine.max_batch_prompts`` prompts of ``role``.

    The HF engine keeps each prompt's KV once and every sample's own new tokens (at most C - 1) per row
    (spell.rl.engine.hf, ``prompt_kv="shared"``): KV = (B x P + B x G x (C - 1)) x kv bytes per token. Prefill
    runs the B prompts at once: per token the MLP's gate/up/product (3I) and about 6h of other tensors, plus
    transformers' boolean [B, 1, P, P] padding mask. A decode step holds fp32 scores of every row against the
    prompt (3 x B G q/head_dim x P) and the [B G, V] logits with their sampling copies (4 x fp32).
    """
    name, prompt, new, samples = role
    batch = cfg.engine.max_batch_prompts
    per_token = arch.kv_bytes_per_token(dtype)
    prefix_kv, rows_kv = batch * prompt * per_token, batch * samples * max(new - 1, 0) * per_token
    prefill = batch * prompt * (3 * arch.active_intermediate + 6 * arch.hidden) * dtype + batch * prompt * prompt
    decode = 3 * batch * samples * arch.heads * prompt * 4 + 4 * batch * samples * arch.vocab * 4
    working = max(prefill - rows_kv, decode)
    return prefix_kv + rows_kv, working, f"{batch} {name} prompts of {prompt:,} x {samples} samples of {new:,}"


def _vllm_items(cfg: SpellConfig, arch: ModelArch, gpu_memory: float | None) -> tuple[list[Item], list[str]]:
    """vLLM reserves ``gpu_memory_utilization`` of the GPU for its bf16 weights, KV blocks and activations. With
    sleep mode (``engine.sleep_level`` >= 1) it frees that for the update, else it holds it throughout. Its KV
    space must hold one responder group (the prompt cached once) and one ``max_model_len`` sequence."""
    if gpu_memory is None:
        return [], ["vLLM reserves engine.gpu_memory_utilization of each GPU: give --gpu-memory-gb to count it"]
    sleep = cfg.engine.sleep_level
    reserved = cfg.engine.gpu_memory_utilization * gpu_memory
    items = [Item(f"vLLM reservation ({cfg.engine.gpu_memory_utilization:g} of the GPU"
                  + (", asleep during the update)" if sleep else ", no sleep mode)"), "rollout" if sleep else "always",
                  reserved)]
    items.append(Item("weight sync (in-place reload: one gathered tensor, one layer re-made)", "rollout",
                      weight_sync_bytes(arch)))
    capacity = (reserved - arch.params * 2 - VLLM_OVERHEAD) / arch.kv_bytes_per_token(2)
    # vLLM's default max_model_len is the model's limit, scaled by model.rope_scaling (its config folder says so)
    factor = parse_rope_scaling(cfg.model.rope_scaling)[1] if cfg.model.rope_scaling else 1.0
    longest = cfg.engine.max_model_len or int(arch.max_positions * factor)
    needed = max(cfg.data.max_prompt_tokens + cfg.responder.group_size * cfg.responder.max_new_tokens, longest)
    notes = [] if capacity >= needed else [
        f"vLLM's KV space holds about {max(capacity, 0):,.0f} tokens, less than {needed:,} (one responder group, "
        "or one max_model_len sequence, which vLLM checks at start): raise engine.gpu_memory_utilization"]
    return items, notes


def weight_sync_bytes(arch: ModelArch) -> int:
    """Transient memory of one vLLM weight sync by in-place reload (spell.rl.engine.vllm), beside the engine.

    Tensors go one at a time: the largest (the embedding, vocab x hidden, or an MLP matrix) is all-gathered in fp32
    and cast to a bf16 copy (4 + 2 bytes per element); vLLM buffers what a layer receives and re-makes the layer in
    bf16 before copying it into its own weights (2 bytes per element of the largest layer: a decoder block, or the
    embedding).

    >>> weight_sync_bytes(ModelArch(hidden=4, intermediate=8, layers=1, heads=2, kv_heads=1, head_dim=2, vocab=10,
    ...                             qkv_bias=False, tied_embeddings=True, max_positions=16))
    544
    """
    largest_layer = max(arch.layer_params, arch.vocab * arch.hidden)
    return 6 * arch.largest_tensor + 2 * largest_layer


def plan_memory(cfg: SpellConfig, arch: ModelArch, world: int = 1, gpu_memory: float | None = None) -> MemoryPlan:
    """The memory of one rank of ``cfg`` on ``world`` ranks (``gpu_memory`` in bytes, for vLLM's reservation)."""
    training, host = training_items(cfg, arch, world)
    rollout, notes = rollout_items(cfg, arch, world, gpu_memory)
    tokens, _, _ = micro_batch_shape(cfg)
    if host:
        notes.append(f"train.fsdp_cpu_offload: {host / GIB:.1f} GiB of weights, gradients and AdamW moments per "
                     "rank live in host memory")
    if cfg.engine.kind == EngineKind.VLLM and cfg.engine.sleep_level == 1:
        offloaded = arch.params * 2  # vLLM's bf16 weights, in pinned host memory while it sleeps
        host += offloaded
        notes.append(f"engine.sleep_level=1: vLLM offloads its {offloaded / GIB:.1f} GiB of bf16 weights per rank to "
                     "pinned host memory for every update and copies them back before the sync overwrites them; "
                     "sleep_level=2 (the default) drops them instead")
    return MemoryPlan(tuple(training + rollout), world, cfg.train.device != "cpu", tokens, host, tuple(notes))


def _dtype(size: int) -> str:
    return {4: "fp32", 2: "bf16"}[size]
