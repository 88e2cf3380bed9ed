"""Held-out accuracy during training: the policy answers labelled questions it never trains on.

Questions come in the evaluation harness's generic format (the built-in world writes its held-out set in
it); prompts, truncation and scoring are the harness's own (``spell.evaluate.runner``), so the numbers a
run logs as ``heldout/*`` are the ones ``spell eval`` would report (avg@n over ``eval.num_samples``).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Sequence

from spell.config import EvalConfig
from spell.evaluate.formats import EvalItem, load_generic
from spell.evaluate.runner import prepare_prompt, score_response
from spell.prompts import Templates
from spell.rl.engine.base import Engine
from spell.types import SamplingParams


def load_heldout(cfg: EvalConfig) -> list[EvalItem]:
    """The configured held-out questions (first ``limit`` of each file; none when ``heldout_files`` is unset)."""
    items: list[EvalItem] = []
    for path in cfg.heldout_files or []:
        loaded = load_generic(path)
        items.extend(loaded[: cfg.limit] if cfg.limit else loaded)
    return items


def heldout_metrics(engine: Engine, items: Sequence[EvalItem], cfg: EvalConfig, templates: Templates,
                    max_input_tokens: int, top_p: float = 1.0, seed: int = 0) -> dict[str, float]:
    """``heldout/accuracy`` plus per task and per hop count (``metadata.hops``) means, in [0, 1].

    Sampling uses its own seeded generator, so evaluating never moves the training RNG (resume stays exact).
    """
    if not items:
        return {}
    prompts = [prepare_prompt(item, engine.tokenizer, max_input_tokens, templates)[0] for item in items]
    sampling = SamplingParams(cfg.temperature, top_p, cfg.max_new_tokens, seed=seed)
    outputs = engine.generate(prompts, sampling, cfg.num_samples)
    groups: dict[str, list[float]] = defaultdict(list)
    for item, completions in zip(items, outputs, strict=True):
        score = statistics.fmean(score_response(item, c.text)[1] for c in completions)
        groups["heldout/accuracy"].append(score)
        groups[f"heldout/{item.task}"].append(score)
        hops = item.metadata.get("hops")
        if hops is not None:
            groups[f"heldout/hops{hops}"].append(score)
    return {key: statistics.fmean(values) for key, values in sorted(groups.items())}
