"""The vLLM generation engine (GPU only; ``pip install 'spell-rl[vllm]'``), colocated with the trainer.

Same contract as the HF engine (spec §3 stages 3, 5, 6, 8): token-id prompts in, n completions each out.
vLLM shares the prompt's KV blocks among the n samples itself (prefix caching). vLLM never loads the
tokenizer (ids in, ids out); completions are decoded here with the policy's own tokenizer, as in the HF
engine. ``sync_weights`` copies the trained HF parameters into vLLM's model in place; written for
vLLM 0.8 - 0.11 (V0 and V1 engines).
vLLM is imported inside ``__init__`` only, so importing this module never needs vLLM.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from spell.rl.engine.hf import resolve_eos_ids
from spell.types import Completion, SamplingParams

logger = logging.getLogger(__name__)

VLLM_MISSING = "EngineKind.VLLM needs vLLM: pip install 'spell-rl[vllm]'"


def _model_folder(model: Any) -> str:
    """A folder vLLM can load: the model's own ``name_or_path`` if it is a local folder, else a fresh save."""
    name = str(getattr(model, "name_or_path", "") or "")
    if name and Path(name, "config.json").is_file():
        return name
    folder = tempfile.mkdtemp(prefix="spell-vllm-")
    model.save_pretrained(folder, safe_serialization=True)
    logger.info("saved the in-memory policy to %s for vLLM", folder)
    return folder


class VLLMEngine:
    """Generates with ``vllm.LLM`` in this process; weights are pushed from the training model.

    Args:
        model: the HF training policy (its folder, or a temporary save of it, is what vLLM loads).
        tokenizer: its tokenizer (eos ids; kept as ``self.tokenizer``).
        gpu_memory_utilization: fraction of GPU memory vLLM may take for weights and KV cache.
        tensor_parallel_size: vLLM tensor-parallel degree. With 1 the engine core runs in this process
            (``VLLM_ENABLE_V1_MULTIPROCESSING=0``) so weights are copied without serialisation.
        max_model_len: longest prompt + completion; ``None`` = the model config's limit.
        seed: vLLM's global seed.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        gpu_memory_utilization: float = 0.6,
        tensor_parallel_size: int = 1,
        max_model_len: int | None = None,
        seed: int = 0,
    ):
        if tensor_parallel_size == 1:
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # keep the model reachable in-process
        try:
            import vllm
        except ImportError as err:
            raise ImportError(VLLM_MISSING) from err
        self._vllm = vllm
        self.tokenizer = tokenizer
        self.eos_token_ids = resolve_eos_ids(tokenizer, model)
        folder = _model_folder(model)
        dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
        self.llm = vllm.LLM(
            model=folder,
            skip_tokenizer_init=True,  # token ids in and out; text is decoded with self.tokenizer
            dtype=dtype,
            gpu_memory_utilization=gpu_memory_utilization,
            tensor_parallel_size=tensor_parallel_size,
            max_model_len=max_model_len,
            seed=seed,
            enable_prefix_caching=True,
        )
        logger.info("vLLM %s engine ready (model %s, dtype %s)", vllm.__version__, folder, dtype)

    def generate(
        self, prompts: Sequence[Sequence[int]], sampling: SamplingParams, n: int = 1
    ) -> list[list[Completion]]:
        """Sample ``n`` completions for every prompt (temperature ``<= 0`` = greedy).

        Args:
            prompts: token-id prompts.
            sampling: temperature, top-p, max_new_tokens, optional seed.
            n: completions per prompt.

        Returns:
            One list of ``n`` completions per prompt, in prompt order.
        """
        if not prompts:  # a round where every question was rejected early
            return []
        params = self._vllm.SamplingParams(
            n=n,
            temperature=max(sampling.temperature, 0.0),
            top_p=sampling.top_p,
            max_tokens=sampling.max_new_tokens,
            seed=sampling.seed,
            stop_token_ids=sorted(self.eos_token_ids),
            detokenize=False,
        )
        requests = [_tokens_prompt(p) for p in prompts]
        outputs = self.llm.generate(requests, params, use_tqdm=False)
        results = []
        for prompt, request in zip(prompts, outputs, strict=True):
            group = sorted(request.outputs, key=lambda o: o.index)
            results.append([self._to_completion(o, prompt) for o in group])
        return results

    def _to_completion(self, output: Any, prompt: Sequence[int]) -> Completion:
        """A vLLM ``CompletionOutput`` as a :class:`Completion`: the stop token kept in ``token_ids``, the text
        decoded without special tokens, any finish reason other than ``stop`` reported as ``length``."""
        ids = list(output.token_ids)
        stop_id = getattr(output, "stop_reason", None)  # the matched stop token id, when vLLM reports one
        if output.finish_reason == "stop" and isinstance(stop_id, int) and (not ids or ids[-1] != stop_id):
            ids.append(stop_id)
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        reason = "stop" if output.finish_reason == "stop" else "length"
        return Completion(text, tuple(ids), tuple(prompt), reason)

    def sync_weights(self, model: Any) -> None:
        """Copy ``model``'s parameters into vLLM's model and drop KV blocks cached with the old weights.

        Args:
            model: the HF policy after an optimizer step (a full, unsharded state dict is read; with FSDP
                gather it first).
        """
        state = model.state_dict()
        local = _local_vllm_model(self.llm)
        if local is not None:
            local.load_weights(state.items())
        elif hasattr(self.llm, "apply_model"):
            # Multi-process engine (tensor parallel): the function and tensors are pickled to every worker
            # (V1 needs VLLM_ALLOW_INSECURE_SERIALIZATION=1 for that); slow, but each worker shards for itself.
            weights = [(name, tensor.detach().cpu()) for name, tensor in state.items()]
            self.llm.apply_model(lambda vllm_model: vllm_model.load_weights(weights))
        else:
            raise RuntimeError("cannot reach vLLM's model to sync weights (unsupported vLLM version)")
        if hasattr(self.llm, "reset_prefix_cache"):
            self.llm.reset_prefix_cache()


def _tokens_prompt(prompt_ids: Sequence[int]) -> Any:
    """A token-id prompt in the form this vLLM version accepts."""
    try:
        from vllm.inputs import TokensPrompt
    except ImportError:  # very old layouts: a plain dict works everywhere
        return {"prompt_token_ids": list(prompt_ids)}
    return TokensPrompt(prompt_token_ids=list(prompt_ids))


def _local_vllm_model(llm: Any) -> Any | None:
    """vLLM's ``nn.Module`` when the engine runs in this process (V0, or V1 without multiprocessing), else None."""
    executor = getattr(llm.llm_engine, "model_executor", None)
    worker = getattr(executor, "driver_worker", None)
    worker = getattr(worker, "worker", worker)  # V1 wraps the worker in a WorkerWrapperBase
    runner = getattr(worker, "model_runner", None)
    get_model = getattr(runner, "get_model", None)  # unwraps CUDA-graph / compile wrappers where present
    return get_model() if callable(get_model) else getattr(runner, "model", None)
