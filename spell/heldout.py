"""Held-out accuracy during training: the policy answers labelled questions it never trains on.

Questions come in the evaluation harness's generic format (the built-in world writes its held-out set in
it); prompts, truncation and scoring are the harness's own (``spell.evaluate.runner``), so the numbers a
run logs as ``heldout/*`` are the ones ``spell eval`` would report (avg@n over ``eval.num_samples``).
"""

from __future__ import annotations

import math
import random
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
                    max_input_tokens: int, top_p: float = 1.0, seed: int = 0,
                    scores_out: list[dict] | None = None) -> dict[str, float]:
    """``heldout/accuracy`` plus per task and per hop count (``metadata.hops``) means, in [0, 1].

    Sampling uses its own seeded generator, so evaluating never moves the training RNG (resume stays exact).
    ``scores_out`` (optional) receives one ``{"id", "task", "score"}`` per question, for paired comparisons.
    """
    if not items:
        return {}
    prompts = [prepare_prompt(item, engine.tokenizer, max_input_tokens, templates)[0] for item in items]
    sampling = SamplingParams(cfg.temperature, top_p, cfg.max_new_tokens, seed=seed)
    outputs = engine.generate(prompts, sampling, cfg.num_samples)
    groups: dict[str, list[float]] = defaultdict(list)
    for item, completions in zip(items, outputs, strict=True):
        score = statistics.fmean(score_response(item, c.text)[1] for c in completions)
        if scores_out is not None:
            scores_out.append({"id": item.id, "task": item.task, "score": score})
        groups["heldout/accuracy"].append(score)
        groups[f"heldout/{item.task}"].append(score)
        hops = item.metadata.get("hops")
        if hops is not None:
            groups[f"heldout/hops{hops}"].append(score)
    return {key: statistics.fmean(values) for key, values in sorted(groups.items())}


def paired_bootstrap(before: Sequence[float], after: Sequence[float], resamples: int = 2000,
                     seed: int = 0) -> tuple[float, float, float, float]:
    """Mean paired change ``after - before`` over the same questions, its standard error and a 95% bootstrap
    interval (percentiles of ``resamples`` resamplings of the questions, seeded).

    Returns:
        ``(delta, standard_error, low, high)`` as fractions.

    >>> delta, se, low, high = paired_bootstrap([0, 0, 1, 1], [1, 0, 1, 1])
    >>> delta, round(se, 3), low <= delta <= high  # one of 4 questions flipped right: +0.25; sd 0.5 / sqrt(4)
    (0.25, 0.25, True)
    """
    if len(before) != len(after) or not before:
        raise ValueError(f"paired_bootstrap needs two equal non-empty lists, got {len(before)} and {len(after)}")
    diffs = [b - a for a, b in zip(before, after)]
    n = len(diffs)
    delta = statistics.fmean(diffs)
    se = statistics.stdev(diffs) / math.sqrt(n) if n > 1 else 0.0
    rng = random.Random(seed)
    means = sorted(statistics.fmean(rng.choices(diffs, k=n)) for _ in range(resamples))
    return delta, se, means[int(0.025 * resamples)], means[int(0.975 * resamples) - 1]
