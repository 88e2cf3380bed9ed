"""Generation engines behind one protocol (spec §3: every role samples through ``Engine.generate``).

``build_engine`` picks the backend from ``cfg.engine.kind``: the transformers engine (CPU or GPU, shared
prompt KV cache) or vLLM (GPU, optional extra; imported only when chosen).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from spell.rl.engine.base import Engine, encode_chat_prompt
from spell.rl.engine.hf import HFEngine
from spell.types import EngineKind

if TYPE_CHECKING:
    from spell.config import EngineConfig

__all__ = ["Engine", "HFEngine", "build_engine", "encode_chat_prompt"]


def build_engine(engine_cfg: EngineConfig, model: Any, tokenizer: Any, seed: int = 0) -> Engine:
    """The generation engine ``engine_cfg.kind`` names, sampling from ``model``.

    Args:
        engine_cfg: the ``engine`` config section.
        model: the policy (a transformers causal LM).
        tokenizer: its tokenizer.
        seed: vLLM's engine seed (the run's ``train.seed``; each request also carries its own seed).

    Returns:
        An :class:`Engine`. ``EngineKind.VLLM`` raises ``ImportError`` when vLLM is not installed.
    """
    match EngineKind(engine_cfg.kind):
        case EngineKind.HF:
            return HFEngine(model, tokenizer, max_batch_prompts=engine_cfg.max_batch_prompts)
        case EngineKind.VLLM:
            from spell.rl.engine.vllm import VLLMEngine

            return VLLMEngine(
                model,
                tokenizer,
                gpu_memory_utilization=engine_cfg.gpu_memory_utilization,
                tensor_parallel_size=engine_cfg.tensor_parallel_size,
                seed=seed,
            )
    raise ValueError(f"unknown engine kind {engine_cfg.kind!r}")
