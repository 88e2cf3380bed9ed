"""Plain PyTorch supervised training for the bootstrap stages (issue 5): seeded, CPU, loss on target tokens only.

A stage draws examples from a seeded source, groups them by length into padded batches of about
``batch_tokens`` tokens, and takes ``steps`` AdamW steps (linear warm-up, cosine decay to 10%). The loss is
the mean cross-entropy over the masked target tokens (assistant turns of a chat); logits are computed only at
those positions. Chats are tokenized exactly as inference does (:func:`spell.rl.engine.base.encode_chat_prompt`).
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from spell.builtin.bootstrap.synthetic import Example
from spell.builtin.bootstrap.transcripts import Transcript
from spell.builtin.tiny import IM_END, IM_START

logger = logging.getLogger(__name__)

POOL_SIZE = 96  # examples sorted by length together, so a batch pads little


def encode_transcript(tokenizer: Any, transcript: Transcript, max_len: int | None = None) -> Example | None:
    """Token ids of a ChatML chat; the mask marks each assistant turn's content and its ``<|im_end|>``.

    Args:
        tokenizer: the policy tokenizer (``<|im_start|>`` / ``<|im_end|>`` special tokens).
        transcript: the chat.
        max_len: drop the example (None) if longer.

    Returns:
        The example, or None if it is longer than ``max_len``.
    """
    im_end = tokenizer.convert_tokens_to_ids(IM_END)
    newline = tokenizer("\n", add_special_tokens=False)["input_ids"]
    ids: list[int] = []
    mask: list[int] = []
    messages = transcript.messages
    for index, (role, content) in enumerate(messages):
        if role == "user":
            text = f"{IM_START}user\n{content}{IM_END}\n"
            if index + 1 < len(messages):
                text += f"{IM_START}assistant\n"
            piece = tokenizer(text, add_special_tokens=False)["input_ids"]
            ids += piece
            mask += [0] * len(piece)
        else:
            piece = tokenizer(content, add_special_tokens=False)["input_ids"] + [im_end]
            ids += piece + newline
            mask += [1] * len(piece) + [0] * len(newline)
    if max_len is not None and len(ids) > max_len:
        return None
    return Example(ids, mask)


def batches(source: Callable[[random.Random], Example | None], rng: random.Random, batch_tokens: int,
            pool_size: int = POOL_SIZE) -> Iterator[list[Example]]:
    """Endless padded-size-bounded batches: pools of examples sorted by length, cut, shuffled."""
    while True:
        pool = [ex for ex in (source(rng) for _ in range(pool_size)) if ex is not None and sum(ex.mask) > 0]
        pool.sort(key=lambda ex: len(ex.ids))
        cut: list[list[Example]] = [[]]
        for ex in pool:
            rows = len(cut[-1]) + 1
            if cut[-1] and rows * len(ex.ids) > batch_tokens:
                cut.append([])
            cut[-1].append(ex)
        rng.shuffle(cut)
        yield from (b for b in cut if b)


def collate(batch: list[Example], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and target ``mask`` tensors [B, L]."""
    width = max(len(ex.ids) for ex in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    att = torch.zeros((len(batch), width), dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.bool)
    for row, ex in enumerate(batch):
        ids[row, :len(ex.ids)] = torch.tensor(ex.ids)
        att[row, :len(ex.ids)] = 1
        mask[row, :len(ex.ids)] = torch.tensor(ex.mask, dtype=torch.bool)
    return ids, att, mask


def target_logits(model: Any, ids: torch.Tensor, att: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Logits [N, V] predicting the N masked tokens (position t-1 predicts token t)."""
    hidden = model.model(input_ids=ids, attention_mask=att).last_hidden_state
    return model.lm_head(hidden[:, :-1][mask[:, 1:]])


def masked_loss(model: Any, ids: torch.Tensor, att: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the masked tokens."""
    return F.cross_entropy(target_logits(model, ids, att, mask).float(), ids[:, 1:][mask[:, 1:]])


@torch.no_grad()
def token_accuracy(model: Any, examples: list[Example], pad_id: int, batch_size: int = 16) -> tuple[float, float]:
    """Teacher-forced accuracy on the masked tokens: (per token, per example all-correct)."""
    was_training = model.training
    model.eval()
    right = total = exact = 0
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        ids, att, mask = collate(chunk, pad_id)
        hit = target_logits(model, ids, att, mask).argmax(-1) == ids[:, 1:][mask[:, 1:]]
        right, total = right + int(hit.sum()), total + hit.numel()
        counts = mask[:, 1:].sum(1).tolist()
        for piece in torch.split(hit, counts):
            exact += int(bool(piece.all()))
    model.train(was_training)
    return right / max(total, 1), exact / max(len(examples), 1)


@dataclass
class Stage:
    """One curriculum stage.

    Attributes:
        name: for logs and the report.
        steps: optimizer steps.
        lr: peak learning rate (warm-up ``warmup`` steps, cosine decay to ``0.1 * lr``).
        batch_tokens: padded tokens per batch.
        source: ``rng -> Example | None`` (None = skip).
        warmup: warm-up steps.
        check: optional ``model -> dict`` run every ``check_every`` steps and at the end.
        check_every: steps between checks (0 = only at the end).
        stop_when: optional ``metrics -> bool``: end the stage early after a check that satisfies it.
    """

    name: str
    steps: int
    lr: float
    batch_tokens: int
    source: Callable[[random.Random], Example | None]
    warmup: int = 30
    check: Callable[[Any], dict] | None = None
    check_every: int = 0
    stop_when: Callable[[dict], bool] | None = None


def _lr_at(step: int, stage: Stage) -> float:
    if step < stage.warmup:
        return stage.lr * (step + 1) / stage.warmup
    progress = (step - stage.warmup) / max(1, stage.steps - stage.warmup)
    return stage.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def run_stage(model: Any, stage: Stage, seed: int, pad_id: int, log_every: int = 50) -> dict:
    """Train ``model`` through one stage; returns steps done, time, mean loss of the last 50 steps, checks."""
    rng = random.Random(f"{seed}/{stage.name}")
    torch.manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=stage.lr, betas=(0.9, 0.95), weight_decay=0.01)
    model.train()
    losses: list[float] = []
    checks: list[dict] = []
    start, tokens, step = time.time(), 0, 0
    feed = batches(stage.source, rng, stage.batch_tokens)
    while step < stage.steps:
        ids, att, mask = collate(next(feed), pad_id)
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(step, stage)
        loss = masked_loss(model, ids, att, mask)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        losses.append(float(loss.detach()))
        tokens += int(att.sum())
        step += 1
        if step % log_every == 0:
            logger.info("%s step %d/%d loss %.4f (%.0f tok/s)", stage.name, step, stage.steps,
                        sum(losses[-log_every:]) / log_every, tokens / (time.time() - start))
        last = step == stage.steps
        if stage.check is not None and (last or (stage.check_every and step % stage.check_every == 0)):
            metrics = {"step": step, **stage.check(model)}
            checks.append(metrics)
            logger.info("%s check: %s", stage.name, metrics)
            if stage.stop_when is not None and stage.stop_when(metrics):
                break
    seconds = time.time() - start
    tail = losses[-50:]
    return {"steps": step, "seconds": round(seconds, 1), "tokens": tokens,
            "final_loss": round(sum(tail) / max(len(tail), 1), 4), "checks": checks}
