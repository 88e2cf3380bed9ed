"""Generation and scoring for the evaluation harness, resumable through ``generations.jsonl`` (spec §9.2-9.3).

Each question is rendered with the training responder template, wrapped in the chat template, middle-
truncated to ``max_input_tokens`` (first and last halves kept) and sampled n times through an
:class:`~spell.rl.engine.Engine`. All n samples of a question are appended to ``generations.jsonl`` together,
so a re-run with the same output dir only generates the questions (or the extra samples) that are missing.
Samples are scored with the training rule scorers; an optional judge then lifts QA / DocMath scores to
max(rule, judge) (called only where the rule score is not 1; never for multiple choice).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spell.evaluate.formats import EvalItem
from spell.evaluate.judge import JudgeRequest, LLMJudge
from spell.prompts import Templates, join_documents, load_templates
from spell.prompts.responder import render_responder_prompt
from spell.tasks import extract_prediction, rule_score
from spell.tasks.doc_mc import format_mc_question
from spell.types import SamplingParams, TaskType, Verdict

if TYPE_CHECKING:
    from spell.rl.engine.base import Engine

logger = logging.getLogger(__name__)

GENERATIONS_FILE = "generations.jsonl"
_TOKEN_BUCKETS = ((8192, "<8k"), (16384, "8k-16k"), (32768, "16k-32k"), (65536, "32k-64k"), (131072, "64k-128k"))

ItemKey = tuple[str, str]


def item_key(benchmark: str, item_id: str) -> ItemKey:
    """The resume key of a question: (benchmark, id)."""
    return (str(benchmark), str(item_id))


def truncate_middle(ids: Sequence[int], max_tokens: int | None) -> list[int]:
    """Keep the first ``max_tokens // 2`` and the last ``max_tokens - max_tokens // 2`` tokens.

    Args:
        ids: prompt token ids (already chat-templated).
        max_tokens: the limit; None or <= 0 means no limit.

    Returns:
        ``ids`` unchanged when short enough, else head + tail.

    Example:
        >>> truncate_middle([1, 2, 3, 4, 5, 6, 7], 4)
        [1, 2, 6, 7]
    """
    if not max_tokens or max_tokens <= 0 or len(ids) <= max_tokens:
        return list(ids)
    head = max_tokens // 2
    return list(ids[:head]) + list(ids[len(ids) - (max_tokens - head) :])


def token_length_bucket(num_tokens: int) -> str:
    """Length bucket from the untruncated prompt length, for benchmarks without their own buckets.

    >>> token_length_bucket(9000)
    '8k-16k'
    """
    for limit, name in _TOKEN_BUCKETS:
        if num_tokens < limit:
            return name
    return "128k+"


def render_eval_prompt(item: EvalItem, templates: Templates | None = None) -> str:
    """The responder prompt of ``item`` (MC options in LongBench-v2 layout), as in training."""
    question = format_mc_question(item.question, item.options) if item.task == TaskType.DOC_MC else item.question
    return render_responder_prompt(item.task, join_documents(item.documents), question, templates=templates)


def prepare_prompt(
    item: EvalItem, tokenizer: Any, max_input_tokens: int | None, templates: Templates | None = None
) -> tuple[list[int], int]:
    """Chat-templated, middle-truncated prompt ids of ``item`` and the untruncated token count."""
    # Imported here: the spell.rl.engine package imports torch, which a finished (resumed) run never needs.
    from spell.rl.engine.base import encode_chat_prompt

    ids = encode_chat_prompt(tokenizer, render_eval_prompt(item, templates))
    return truncate_middle(ids, max_input_tokens), len(ids)


class PromptTooLongError(ValueError):
    """A prompt (after middle truncation) plus the answer budget exceeds the positions the model attends."""


def check_prompt_fits(item: EvalItem, kept_tokens: int, max_new_tokens: int, max_positions: int | None) -> None:
    """Refuse a prompt the model cannot attend: ``kept_tokens + max_new_tokens > max_positions``.

    Raises:
        PromptTooLongError: one line naming the question, the numbers and the fixes.
    """
    if max_positions is None or kept_tokens + max_new_tokens <= max_positions:
        return
    room = max_positions - max_new_tokens
    fix = f"--max-input-tokens {room} (middle truncation)" if room > 0 else "a smaller --max-new-tokens"
    raise PromptTooLongError(
        f"{item.benchmark}/{item.id}: prompt of {kept_tokens:,} tokens + {max_new_tokens:,} new tokens exceeds the "
        f"{max_positions:,} positions the model attends. Fix: {fix}, or --rope-scaling yarn:FACTOR")


def check_prompt_lengths(items: Sequence[EvalItem], tokenizer: Any, max_input_tokens: int | None,
                         max_new_tokens: int, max_positions: int, templates: Templates | None = None) -> None:
    """:func:`check_prompt_fits` for every item, with a tokenizer only (run before any model is loaded)."""
    templates = templates or load_templates(None)
    for item in items:
        ids, _ = prepare_prompt(item, tokenizer, max_input_tokens, templates)
        check_prompt_fits(item, len(ids), max_new_tokens, max_positions)


def score_response(item: EvalItem, response: str) -> tuple[str | None, float]:
    """(parsed prediction, rule score): the best rule score over the item's gold answers."""
    best = max(rule_score(item.task, response, gold) for gold in item.answers)
    return extract_prediction(item.task, response), float(best)


def load_generations(path: str | Path) -> list[dict]:
    """Records of ``generations.jsonl`` (empty if absent); a torn line left by a crash is dropped and the
    file rewritten without it, so appends stay valid JSONL."""
    path = Path(path)
    if not path.is_file():
        return []
    records, bad = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
            valid = isinstance(record, dict) and "benchmark" in record and "id" in record and "score" in record
            valid = valid and isinstance(record.get("sample_index"), int)
        except json.JSONDecodeError:
            valid = False
        if valid:
            records.append(record)
        else:
            bad += 1
    if bad:
        logger.warning("%s: dropped %d unreadable line(s) (an interrupted write); they are regenerated", path, bad)
        write_generations(path, records)
    return records


def write_generations(path: str | Path, records: Iterable[dict]) -> None:
    """Rewrite ``generations.jsonl`` atomically (temp file + rename)."""
    path = Path(path)
    tmp = path.with_suffix(".jsonl.tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def samples_done(records: Iterable[dict]) -> dict[ItemKey, int]:
    """How many distinct samples each question already has."""
    indices: dict[ItemKey, set[int]] = {}
    for record in records:
        indices.setdefault(item_key(record["benchmark"], record["id"]), set()).add(int(record["sample_index"]))
    return {key: len(found) for key, found in indices.items()}


def _record(item: EvalItem, index: int, completion: Any, prompt_tokens: int, kept_tokens: int) -> dict:
    prediction, rule = score_response(item, completion.text)
    return {
        "benchmark": item.benchmark,
        "id": item.id,
        "sample_index": index,
        "task": item.task.value,
        "length_bucket": item.length_bucket or token_length_bucket(prompt_tokens),
        "prompt_tokens": prompt_tokens,
        "truncated": kept_tokens < prompt_tokens,
        "response": completion.text,
        "response_tokens": len(completion.token_ids),
        "finish_reason": completion.finish_reason,
        "prediction": prediction,
        "gold": list(item.answers),
        "rule_score": rule,
        "judge": None,
        "score": rule,
    }


def generate_missing(
    items: Sequence[EvalItem],
    engine_factory: Callable[[], Engine],
    sampling: SamplingParams,
    n: int,
    output_path: str | Path,
    *,
    max_input_tokens: int | None,
    batch_prompts: int = 8,
    templates: Templates | None = None,
    max_positions: int | None = None,
    tokenizer: Any = None,
    progress: bool | None = None,
) -> int:
    """Generate the samples each question still lacks and append them to ``output_path``.

    Args:
        items: the questions of this run.
        engine_factory: builds the engine; called only if something is missing (a finished run never
            loads the model).
        sampling: temperature, top-p, max new tokens, seed.
        n: samples wanted per question.
        output_path: the ``generations.jsonl`` to append to (created if absent).
        max_input_tokens: middle-truncation limit of the templated prompt (None = none).
        batch_prompts: questions per engine call.
        templates: responder templates (None = built-in).
        max_positions: positions the model attends (with rope scaling); a truncated prompt plus
            ``sampling.max_new_tokens`` beyond it is refused. None = no check.
        tokenizer: with ``max_positions``, every pending prompt is checked with it BEFORE the engine (the
            model) is built; without it each batch is checked as it is prepared.
        progress: a progress bar (samples, generated tokens/s, ETA) on stderr; None = when stderr is a
            terminal. Without a bar, one log line per batch carries the same numbers.

    Returns:
        The number of samples generated.

    Raises:
        PromptTooLongError: a prompt the model cannot attend (see :func:`check_prompt_fits`).
    """
    output_path = Path(output_path)
    done = samples_done(load_generations(output_path))
    pending = [(item, done.get(item_key(item.benchmark, item.id), 0)) for item in items]
    pending = [(item, have) for item, have in pending if have < n]
    if not pending:
        logger.info("all %d questions already have %d samples: nothing to generate", len(items), n)
        return 0
    logger.info("generating for %d of %d questions (n=%d)", len(pending), len(items), n)
    templates = templates or load_templates(None)
    if max_positions is not None and tokenizer is not None:
        check_prompt_lengths([item for item, _ in pending], tokenizer, max_input_tokens, sampling.max_new_tokens,
                             max_positions, templates)
    engine = engine_factory()
    output_path.parent.mkdir(parents=True, exist_ok=True)
    meter = EvalProgress(sum(n - have for _, have in pending), progress)
    by_have: dict[int, list[EvalItem]] = {}
    for item, have in pending:
        by_have.setdefault(have, []).append(item)
    try:
        for have, group in sorted(by_have.items()):
            for start in range(0, len(group), max(1, batch_prompts)):
                chunk = group[start : start + max(1, batch_prompts)]
                prompts = [prepare_prompt(item, engine.tokenizer, max_input_tokens, templates) for item in chunk]
                for item, (ids, _) in zip(chunk, prompts):
                    check_prompt_fits(item, len(ids), sampling.max_new_tokens, max_positions)
                # A new seed for samples added to questions that have some: the same seed would repeat them.
                seed = None if sampling.seed is None else sampling.seed + have
                outputs = engine.generate([ids for ids, _ in prompts], replace(sampling, seed=seed), n=n - have)
                with output_path.open("a", encoding="utf-8") as handle:
                    for item, (ids, full_len), completions in zip(chunk, prompts, outputs):
                        for offset, completion in enumerate(completions):
                            record = _record(item, have + offset, completion, full_len, len(ids))
                            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
                meter.update([c for group_out in outputs for c in group_out])
    finally:
        meter.close()
    return meter.samples


class EvalProgress:
    """Progress of the generation: samples done of ``total``, generated tokens per second and the ETA.

    A tqdm bar on stderr when ``enabled`` (None = when stderr is a terminal), else one log line per batch.
    """

    def __init__(self, total: int, enabled: bool | None = None):
        from tqdm.auto import tqdm

        self.total, self.samples, self.tokens, self.start = total, 0, 0, time.monotonic()
        enabled = sys.stderr.isatty() if enabled is None else enabled
        self.bar = tqdm(total=total, desc="spell eval", unit=" samples", file=sys.stderr, dynamic_ncols=True,
                        smoothing=0.1) if enabled else None

    def update(self, completions: Sequence[Any]) -> None:
        """Count one batch's completions (their ``token_ids``)."""
        self.samples += len(completions)
        self.tokens += sum(len(c.token_ids) for c in completions)
        rate = self.tokens / max(time.monotonic() - self.start, 1e-9)
        if self.bar is not None:
            self.bar.set_postfix_str(f"{rate:,.0f} tok/s", refresh=False)
            self.bar.update(len(completions))
        else:
            logger.info("generated %d/%d samples, %s", self.samples, self.total, self.summary())

    def summary(self) -> str:
        """``"12.3 samples/s, 456 tok/s, ETA 0:01:02"`` from the samples and tokens so far."""
        elapsed = max(time.monotonic() - self.start, 1e-9)
        per_second = self.samples / elapsed
        eta = (self.total - self.samples) / per_second if per_second > 0 else float("inf")
        eta_text = f"{int(eta // 3600)}:{int(eta % 3600 // 60):02d}:{int(eta % 60):02d}" if eta < 1e9 else "?"
        return f"{per_second:.2f} samples/s, {self.tokens / elapsed:,.0f} tok/s, ETA {eta_text}"

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _needs_judge(record: dict) -> bool:
    return (
        record.get("task") != TaskType.DOC_MC.value
        and float(record.get("rule_score", 0.0)) < 1.0
        and record.get("prediction") is not None
        and record.get("judge") not in (Verdict.YES.value, Verdict.NO.value)
    )


def apply_judge(records: list[dict], items: Sequence[EvalItem], judge: LLMJudge | None) -> int:
    """Fill ``judge`` and set the final ``score`` of every record, in place.

    Without a judge, score = rule score. With one, QA / DocMath samples whose rule score is below 1 and
    that have a parsed prediction are judged (cached verdicts are reused) and score = max(rule, judge).
    Multiple-choice samples are letter accuracy only (spec §9.3).

    Returns:
        The number of records that needed a verdict this time.
    """
    questions = {item_key(item.benchmark, item.id): item for item in items}
    todo = [
        r for r in records if judge is not None and _needs_judge(r) and item_key(r["benchmark"], r["id"]) in questions
    ]
    if todo:
        requests = []
        for record in todo:
            item = questions[item_key(record["benchmark"], record["id"])]
            # Deviation: spec §9.3 - several gold answers (LongBench) are shown to the judge joined by " OR ".
            requests.append(JudgeRequest(item.question, str(record["prediction"]), " OR ".join(item.answers)))
        for record, verdict in zip(todo, judge.judge(requests)):
            record["judge"] = verdict.value
    for record in records:
        rule = float(record.get("rule_score", 0.0))
        judged = judge is not None and record.get("judge") == Verdict.YES.value
        record["score"] = max(rule, 1.0 if judged else 0.0)
    return len(todo)


def select_records(records: Iterable[dict], items: Sequence[EvalItem], n: int) -> list[dict]:
    """The records of this run's questions with ``sample_index < n`` (a run may reuse a larger dir)."""
    wanted = {item_key(item.benchmark, item.id) for item in items}
    return [r for r in records if item_key(r["benchmark"], r["id"]) in wanted and int(r["sample_index"]) < n]
