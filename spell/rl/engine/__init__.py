"""Generation engines behind one protocol (spec §3: every role samples through ``Engine.generate``).

``build_engine`` picks the backend from ``cfg.engine.kind``: the transformers engine (CPU or GPU, shared
prompt KV cache) or vLLM colocated with the trainer (GPU or vLLM's CPU build, optional extras; imported only when
chosen).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from spell.rl.engine.base import Engine, encode_chat_prompt
from spell.rl.engine.hf import HFEngine
from spell.types import EngineKind

if TYPE_CHECKING:
    from spell.config import EngineConfig

__all__ = ["Engine", "HFEngine", "SleepingEngine", "build_engine", "encode_chat_prompt"]


@runtime_checkable
class SleepingEngine(Protocol):
    """An engine holding GPU memory of its own (colocated vLLM): the trainer calls ``sleep()`` before the update
    so the backward pass gets that memory; the engine's next ``sync_weights`` wakes it with the new weights."""

    def sleep(self) -> None: ...


def build_engine(engine_cfg: EngineConfig, model: Any, tokenizer: Any, seed: int = 0,
                 model_dtype: str = "auto") -> Engine:
    """The generation engine ``engine_cfg.kind`` names, sampling from ``model``.

    Args:
        engine_cfg: the ``engine`` config section.
        model: the policy (a transformers causal LM; plain, PEFT-wrapped or FSDP2-sharded).
        tokenizer: its tokenizer.
        seed: the run's ``train.seed``; vLLM's sampler on tensor-parallel group g (rank // tensor_parallel_size)
            is seeded with ``seed + g`` (each request may also carry its own seed).
        model_dtype: ``model.dtype``; vLLM samples in bf16 for ``auto`` (fp32 master weights). The HF engine
            autocasts to bf16 on a bf16 GPU for ``auto`` only: an explicit ``float32`` generates in fp32.

    Returns:
        An :class:`Engine`. ``EngineKind.VLLM`` raises ``ImportError`` when vLLM is not installed.
    """
    match EngineKind(engine_cfg.kind):
        case EngineKind.HF:
            compute = None if model_dtype == "float32" else "auto"  # an explicit fp32 choice is kept
            return HFEngine(model, tokenizer, max_batch_prompts=engine_cfg.max_batch_prompts, compute_dtype=compute)
        case EngineKind.VLLM:
            from spell.rl.engine.vllm import VLLMEngine

            return VLLMEngine(
                model,
                tokenizer,
                gpu_memory_utilization=engine_cfg.gpu_memory_utilization,
                tensor_parallel_size=engine_cfg.tensor_parallel_size,
                max_model_len=engine_cfg.max_model_len or None,
                seed=seed,
                dtype=model_dtype,
                colocate=True,
                sleep_level=engine_cfg.sleep_level,
                weight_sync_bucket_mb=engine_cfg.weight_sync_bucket_mb,
                cpu_kv_cache_gb=engine_cfg.cpu_kv_cache_gb,
                enforce_eager=engine_cfg.enforce_eager,
            )
    raise ValueError(f"unknown engine kind {engine_cfg.kind!r}")
