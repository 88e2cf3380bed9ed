"""The model facts the memory planner needs, read from a ``config.json`` without loading any weights.

Decoder-only transformers in the Llama / Qwen2 / Mistral layout: token embedding, ``layers`` blocks of
(RMSNorm, grouped-query attention with q/k/v/o projections, RMSNorm, SwiGLU MLP with gate/up/down
projections), a final RMSNorm and the output head (tied to the embedding or not). Parameter counts follow that
layout exactly (Qwen2's q/k/v biases included), so they match ``sum(p.numel())`` of the loaded model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

# Module names of the linear layers LoRA can wrap, as in PEFT's "all-linear" for these models.
LINEAR_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class ArchitectureError(ValueError):
    """A config.json the planner cannot read (missing keys, not a decoder-only transformer)."""


@dataclass(frozen=True, slots=True)
class ModelArch:
    """Sizes of a decoder-only transformer (the config.json keys in brackets).

    Attributes:
        vocab: vocabulary rows of the embedding and the head [vocab_size].
        hidden: model width h [hidden_size].
        layers: decoder blocks [num_hidden_layers].
        heads: query heads [num_attention_heads].
        kv_heads: key/value heads, grouped-query attention [num_key_value_heads].
        head_dim: width of one head [head_dim, else hidden / heads].
        intermediate: SwiGLU width [intermediate_size].
        tied_embeddings: the head reuses the embedding matrix [tie_word_embeddings].
        qkv_bias: q/k/v projections have biases (Qwen2: yes; Llama: [attention_bias]).
        max_positions: longest sequence the model was trained for [max_position_embeddings].
        name: a label for reports.
        qk_norm: RMSNorm on each head's queries and keys (Qwen3: yes).
        experts: mixture-of-experts MLP: experts per layer [num_experts, Mixtral: num_local_experts]; 0 = dense.
        experts_per_token: experts each token is routed to [num_experts_per_tok].
        expert_intermediate: SwiGLU width of one expert [moe_intermediate_size, else intermediate_size].
    Every expert's parameters are held (``layer_params``); a token computes with ``experts_per_token`` of them
    (``active_intermediate``, what activations are counted with). Shared experts (Qwen2-MoE) are not modelled.
    """

    vocab: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    tied_embeddings: bool
    qkv_bias: bool
    max_positions: int
    name: str = "model"
    qk_norm: bool = False
    experts: int = 0
    experts_per_token: int = 0
    expert_intermediate: int = 0

    @property
    def layer_params(self) -> int:
        """Parameters of one decoder block: attention (+ q/k norms), the MLP (every expert and the router, for a
        mixture of experts) and its two RMSNorm weights."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        attention = self.hidden * q + 2 * self.hidden * kv + q * self.hidden
        bias = (q + 2 * kv) if self.qkv_bias else 0
        norms = 2 * self.hidden + (2 * self.head_dim if self.qk_norm else 0)
        if self.experts:
            mlp = self.experts * 3 * self.hidden * self.expert_intermediate + self.hidden * self.experts
        else:
            mlp = 3 * self.hidden * self.intermediate
        return attention + bias + mlp + norms

    @property
    def active_intermediate(self) -> int:
        """The MLP width one token computes with: ``intermediate``, or its experts' widths added up."""
        return self.experts_per_token * self.expert_intermediate if self.experts else self.intermediate

    @property
    def largest_tensor(self) -> int:
        """Elements of the largest single weight: the embedding, a dense MLP matrix or a layer's fused experts
        (transformers keeps gate and up projections of all experts in one [experts, 2 x width, hidden] tensor)."""
        mlp = 2 * self.experts * self.expert_intermediate if self.experts else self.intermediate
        return max(self.vocab * self.hidden, self.hidden * mlp)

    @property
    def root_params(self) -> int:
        """Parameters outside the decoder blocks: embedding, final norm and (untied) head."""
        return self.vocab * self.hidden * (1 if self.tied_embeddings else 2) + self.hidden

    @property
    def params(self) -> int:
        return self.layers * self.layer_params + self.root_params

    def kv_bytes_per_token(self, dtype_bytes: int) -> int:
        """KV-cache bytes of one token over all layers: keys and values of every KV head."""
        return 2 * self.layers * self.kv_heads * self.head_dim * dtype_bytes

    def lora_params(self, rank: int, targets: list[str]) -> int:
        """Trainable parameters of rank-``rank`` LoRA adapters (A: in x r, B: r x out) on ``targets``."""
        q, kv, h, i = self.heads * self.head_dim, self.kv_heads * self.head_dim, self.hidden, self.intermediate
        shapes = {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
                  "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}
        names = LINEAR_MODULES if "all-linear" in targets else [t for t in targets if t in shapes]
        if self.experts:  # fused 3-D expert weights are no Linear layers: LoRA reaches the attention only
            names = [n for n in names if n not in ("gate_proj", "up_proj", "down_proj")]
        return self.layers * sum(rank * (shapes[n][0] + shapes[n][1]) for n in names)

    def describe(self) -> str:
        count = f"{self.params / 1e9:.2f}B" if self.params >= 1e9 else f"{self.params / 1e6:.2f}M"
        mlp = (f"{self.experts} experts of {self.expert_intermediate}, {self.experts_per_token} per token"
               if self.experts else str(self.intermediate))
        return (f"{self.name}: {count} parameters (hidden {self.hidden}, {self.layers} layers, "
                f"{self.heads} heads / {self.kv_heads} KV heads of {self.head_dim}, MLP {mlp}, "
                f"vocab {self.vocab}, {'tied' if self.tied_embeddings else 'untied'} head, "
                f"{self.max_positions} positions)")


# Published architectures, for planning before the weights are downloaded (`spell plan --model-config NAME`,
# or a preset of that name without model.path). Values are those of the model's config.json.
KNOWN_ARCHITECTURES = {
    "qwen2.5-7b-instruct": ModelArch(vocab=152064, hidden=3584, layers=28, heads=28, kv_heads=4, head_dim=128,
                                     intermediate=18944, tied_embeddings=False, qkv_bias=True,
                                     max_positions=32768, name="Qwen2.5-7B-Instruct"),
}


def arch_from_config(config: dict, name: str = "model") -> ModelArch:
    """A :class:`ModelArch` from the parsed ``config.json`` of a Hugging Face causal LM.

    Raises:
        ArchitectureError: a required size is missing (e.g. an encoder-decoder or multimodal config).
    """
    config = config.get("text_config", config)  # multimodal wrappers keep the language model's sizes there
    required = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
    missing = [key for key in required if not isinstance(config.get(key), int)]
    if missing:
        raise ArchitectureError(f"config.json of {name} lacks {missing}: not a decoder-only transformer the "
                                "planner knows (Llama / Qwen2 / Mistral layout)")
    heads = config["num_attention_heads"]
    bias = config.get("attention_bias", config.get("model_type") in ("qwen2", "qwen2_moe"))
    experts = int(config.get("num_experts") or config.get("num_local_experts") or 0)
    return ModelArch(
        vocab=config["vocab_size"], hidden=config["hidden_size"], layers=config["num_hidden_layers"], heads=heads,
        kv_heads=config.get("num_key_value_heads") or heads,
        head_dim=config.get("head_dim") or config["hidden_size"] // heads,
        intermediate=config["intermediate_size"], tied_embeddings=bool(config.get("tie_word_embeddings", False)),
        qkv_bias=bool(bias), max_positions=int(config.get("max_position_embeddings") or 0), name=name,
        qk_norm=config.get("model_type") in ("qwen3", "qwen3_moe"), experts=experts,
        experts_per_token=int(config.get("num_experts_per_tok") or 0) if experts else 0,
        expert_intermediate=int(config.get("moe_intermediate_size") or config["intermediate_size"]) if experts else 0)


def load_arch(source: str | Path) -> ModelArch:
    """The architecture of a ``config.json`` file, a model folder holding one, or a :data:`KNOWN_ARCHITECTURES`
    name.

    Raises:
        FileNotFoundError: neither a known name nor a readable config.json.
        ArchitectureError: the file is not JSON or not a decoder-only transformer.
    """
    if str(source).lower() in KNOWN_ARCHITECTURES:
        return KNOWN_ARCHITECTURES[str(source).lower()]
    path = Path(source).expanduser()
    file = path / "config.json" if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"{source}: no config.json there and not a known architecture "
                                f"({', '.join(KNOWN_ARCHITECTURES)}). Fix: pass a model folder or its config.json")
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ArchitectureError(f"{file}: not a readable JSON config ({err})") from None
    return arch_from_config(config, name=file.parent.name or str(file))
