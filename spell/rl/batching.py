"""Batching for the update: micro-batches under a token budget and the per-sample (left-padded) layout.

:func:`pack_micro_batches` groups sequences so that a micro-batch's padded size fits ``grpo.micro_batch_tokens``;
:func:`collate` lays samples out one per row, left padded, as :func:`spell.rl.policy.sequence_logprobs` reads
them (the shared-prefix layout is :mod:`spell.rl.shared_prefix`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from spell.types import RoleSample


def pack_micro_batches(lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Group sequence indices into micro-batches whose padded size ``max_len * count`` fits ``max_tokens``.

    Sequences are sorted longest first (ties by index), so each micro-batch holds similar lengths and little
    padding; a sequence longer than ``max_tokens`` gets a micro-batch of its own. Deterministic.

    Args:
        lengths: the (unpadded) token length of each sequence.
        max_tokens: token budget of one micro-batch (``grpo.micro_batch_tokens``).

    Returns:
        Lists of indices into ``lengths``; every index appears exactly once.

    Example:
        >>> pack_micro_batches([3, 5, 2, 5], max_tokens=10)
        [[1, 3], [0, 2]]
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens={max_tokens}: must be >= 1")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    for index in order:
        # Longest first, so the first index of the open batch holds its max length.
        if batches and lengths[batches[-1][0]] * (len(batches[-1]) + 1) <= max_tokens:
            batches[-1].append(index)
        else:
            batches.append([index])
    return batches


def collate(samples: Sequence[RoleSample], pad_id: int) -> dict[str, torch.Tensor]:
    """Left-pad prompt + completion of each sample into one batch.

    Args:
        samples: the sequences of one micro-batch. Every prompt must be non-empty.
        pad_id: the tokenizer's pad token id.

    Returns:
        ``input_ids`` [N, L] long, ``attention_mask`` [N, L] long (1 = real token), ``completion_mask``
        [N, L] bool (True on completion tokens), ``advantages`` [N] float32, ``temperatures`` [N] float32
        (each sample's sampling temperature, for :func:`sequence_logprobs`).

    Raises:
        ValueError: an empty prompt.
    """
    length = max((len(s.prompt_ids) + len(s.completion_ids) for s in samples), default=0)
    num = len(samples)
    input_ids = torch.full((num, length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros(num, length, dtype=torch.long)
    completion_mask = torch.zeros(num, length, dtype=torch.bool)
    for row, sample in enumerate(samples):
        if not sample.prompt_ids:
            raise ValueError(f"sample {row} ({sample.role}, group {sample.group_id}) has an empty prompt")
        ids = list(sample.prompt_ids) + list(sample.completion_ids)
        start = length - len(ids)
        completion_start = start + len(sample.prompt_ids)
        input_ids[row, start:] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, start:] = 1
        completion_mask[row, completion_start:] = True
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "completion_mask": completion_mask,
        "advantages": torch.tensor([s.advantage for s in samples], dtype=torch.float32),
        "temperatures": torch.tensor([s.temperature for s in samples], dtype=torch.float32),
    }
