"""The shared-prefix update layout (``grpo.shared_prefix``): each distinct prompt of a micro-batch encoded once.

A responder group's G answers (and a verifier's votes on one answer) share one prompt. Instead of G left-padded
sequences that each repeat it, a row holds the prompt once followed by all its completions; the attention lets
every completion see only the prompt and itself, and positions restart after the prompt for every completion, so
each completion is scored exactly as if it followed the prompt alone. ``sdpa`` models attend through
:mod:`spell.rl.prefix_attention` (the prompt on the fused causal kernel, the completions through a [Q, T] mask);
other implementations get the full [T, T] mask. The decoder and the chunked LM head are those of
:mod:`spell.rl.policy` (FSDP2-aware through the same registered forward method).
Shape legend: R rows, T padded row length, N samples, C longest completion, M scored tokens.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from spell.rl.policy import model_forward
from spell.rl.prefix_attention import use_prefix_attention
from spell.types import RoleSample


def prompt_units(samples: Sequence[RoleSample], max_tokens: int) -> list[list[int]]:
    """Indices of samples that share one identical prompt, in first-seen order: the units of the shared-prefix
    layout. A group whose packed length (prompt once + its completions) exceeds ``max_tokens`` is split into
    several units, each with the prompt, so one packed row never exceeds the micro-batch budget (a lone
    sample longer than it stays a unit of its own).

    >>> s = lambda p, c: RoleSample("responder", "doc_mc", "g", tuple(p), tuple(c), 0.0)
    >>> prompt_units([s([1, 2], [3]), s([9], [4]), s([1, 2], [5, 6])], max_tokens=100)
    [[0, 2], [1]]
    >>> prompt_units([s([1, 2], [3]), s([1, 2], [4]), s([1, 2], [5])], max_tokens=4)  # 2 + 1 + 1 fits, + 1 not
    [[0, 1], [2]]
    """
    groups: dict[tuple[int, ...], list[int]] = {}
    for index, sample in enumerate(samples):
        groups.setdefault(tuple(sample.prompt_ids), []).append(index)
    units: list[list[int]] = []
    for prompt, members in groups.items():
        unit, length = [], len(prompt)
        for index in members:
            size = len(samples[index].completion_ids)
            if unit and length + size > max_tokens:
                units.append(unit)
                unit, length = [], len(prompt)
            unit.append(index)
            length += size
        units.append(unit)
    return units


def pack_shared_prompts(samples: Sequence[RoleSample], pad_id: int) -> dict[str, torch.Tensor]:
    """The shared-prefix layout of a micro-batch: each distinct prompt ONCE, followed by all its completions.

    A row is ``prompt, completion_1, ..., completion_k`` (right padded to the longest row). The attention masks
    let every completion token see the prompt and the earlier tokens of its own completion only, and
    positions restart after the prompt for every completion, so each completion is scored exactly as if it
    followed the prompt alone; the prompt's forward (and backward) runs once per row instead of once per
    sample. Padding tokens attend to themselves only (a fully masked query would give NaN).

    Returns:
        ``input_ids`` / ``position_ids`` [R, T] long; ``segment`` [R, T] long (0 = prompt, j = completion j,
        -1 = padding: :func:`segment_attention` and :func:`completion_attention` make the masks from it);
        ``prefix_lengths`` / ``row_lengths`` [R] (prompt and real tokens of each row); ``hidden_index`` [M]
        (flat ``row * T + position`` of the hidden state predicting each scored token: the prompt's last
        position for a completion's first token); ``targets`` [M]; ``token_sample`` and
        ``token_offset`` [M] (which sample and which of its completion tokens); ``temperatures`` [M];
        ``completion_mask`` [N, C] bool and ``advantages`` [N] in the order of ``samples`` (C = the longest
        completion). Samples with an empty completion are scored nowhere.
    """
    units = prompt_units(samples, max_tokens=2**62)  # one row per distinct prompt (the caller sized the batch)
    rows = []
    for unit in units:
        prompt = list(samples[unit[0]].prompt_ids)
        if not prompt:
            raise ValueError(f"sample {unit[0]} has an empty prompt")
        rows.append((prompt, [(i, list(samples[i].completion_ids)) for i in unit]))
    length = max(len(p) + sum(len(c) for _, c in comps) for p, comps in rows)
    num_rows, num = len(rows), len(samples)
    input_ids = torch.full((num_rows, length), pad_id, dtype=torch.long)
    position_ids = torch.zeros(num_rows, length, dtype=torch.long)
    segment = torch.full((num_rows, length), -1, dtype=torch.long)  # 0 = prompt, j = completion j, -1 = pad
    hidden_index, targets, token_sample, token_offset = [], [], [], []
    for row, (prompt, comps) in enumerate(rows):
        start = len(prompt)
        input_ids[row, :start] = torch.tensor(prompt)
        position_ids[row, :start] = torch.arange(start)
        segment[row, :start] = 0
        for j, (index, completion) in enumerate(comps, start=1):
            end = start + len(completion)
            input_ids[row, start:end] = torch.tensor(completion, dtype=torch.long)
            position_ids[row, start:end] = torch.arange(len(prompt), len(prompt) + len(completion))
            segment[row, start:end] = j
            if completion:  # token t is predicted by the prompt's last position (t = 0), then by token t - 1
                before = torch.cat([torch.tensor([len(prompt) - 1]), torch.arange(start, end - 1)])
                hidden_index.append(row * length + before)
                targets.append(input_ids[row, start:end])
                token_sample.append(torch.full((len(completion),), index, dtype=torch.long))
                token_offset.append(torch.arange(len(completion)))
            start = end
    width = max((len(s.completion_ids) for s in samples), default=0)
    completion_mask = torch.zeros(num, width, dtype=torch.bool)
    for index, sample in enumerate(samples):
        completion_mask[index, : len(sample.completion_ids)] = True
    temperatures = torch.tensor([s.temperature if s.temperature > 0 else 1.0 for s in samples], dtype=torch.float32)
    flat = {name: torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long) for name, parts in
            (("hidden_index", hidden_index), ("targets", targets), ("token_sample", token_sample),
             ("token_offset", token_offset))}
    return {
        "input_ids": input_ids, "position_ids": position_ids, "segment": segment,
        "prefix_lengths": torch.tensor([len(p) for p, _ in rows]),
        "row_lengths": torch.tensor([len(p) + sum(len(c) for _, c in comps) for p, comps in rows]), **flat,
        "temperatures": temperatures[flat["token_sample"]], "completion_mask": completion_mask,
        "advantages": torch.tensor([s.advantage for s in samples], dtype=torch.float32),
    }


def shared_prefix_logprobs(model: nn.Module, batch: dict[str, torch.Tensor], chunk_tokens: int = 1024,
                           with_entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-token log-probs (and entropy) of a :func:`pack_shared_prompts` batch, completion-aligned.

    The same numbers as :func:`sequence_logprobs` on each sample alone (the prompt's hidden states are computed
    once and every completion attends to them; gradients from all completions accumulate in the shared
    prompt's single forward), at the cost of one prompt per row instead of one per sample. An ``sdpa`` model is
    switched to :mod:`spell.rl.prefix_attention` (no [T, T] mask; the prompt's causal attention on the fused
    kernel); other implementations get the full mask of :func:`segment_attention`.

    Returns:
        ``(logprobs, entropy)``, float32, shape [N, C]: ``logprobs[n, t]`` = log p(completion token t of sample
        n | prompt, earlier tokens) where ``completion_mask[n, t]``, else 0. ``entropy`` likewise, or None.
    """
    mask, attention_kwargs = _attention_inputs(model, batch)
    temperatures = batch["temperatures"]
    flat_lp, flat_entropy = model_forward(model)(
        batch["input_ids"], mask, batch["position_ids"], batch["hidden_index"], batch["targets"],
        None if bool((temperatures == 1.0).all()) else temperatures, chunk_tokens, with_entropy,
        **attention_kwargs)
    index = (batch["token_sample"], batch["token_offset"])
    shape = batch["completion_mask"].shape
    logprobs = flat_lp.new_zeros(shape).index_put(index, flat_lp)
    entropy = flat_entropy.new_zeros(shape).index_put(index, flat_entropy) if with_entropy else None
    return logprobs, entropy


def _attention_inputs(model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict]:
    """The mask (and prefix-attention layout) ``model`` needs for ``batch``, built once per batch and kept in it: a
    second pass over the same batch (the KL reference) reuses it instead of building it again."""
    prefix = use_prefix_attention(model)
    eager = getattr(model.config, "_attn_implementation", "sdpa") == "eager"
    key = ("_mask", prefix, eager)
    if key not in batch:
        segment = batch["segment"]
        if prefix:
            mask = completion_attention(segment, batch["prefix_lengths"], batch["row_lengths"])
        else:
            mask = segment_attention(segment)
        # Additive fp32 masks for eager (it adds the mask to the scores) and on CPU: PyTorch's CPU attention
        # converts a bool mask to a float one in EVERY layer and keeps each copy for backward (measured: 4 layers
        # at 6K tokens, 632 MiB with a bool mask vs 180 MiB with one shared float mask, the same as is_causal).
        # CUDA keeps the bool mask (not measured here).
        if mask.device.type == "cpu" or eager:
            mask = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device).masked_fill(
                ~mask, torch.finfo(torch.float32).min)
        batch[key] = mask
    kwargs = ({"prefix_lengths": batch["prefix_lengths"].tolist(), "row_lengths": batch["row_lengths"].tolist()}
              if prefix else {})
    return batch[key], kwargs


def completion_attention(segment: torch.Tensor, prefix_lengths: torch.Tensor,
                         row_lengths: torch.Tensor) -> torch.Tensor:
    """The [R, 1, Q, T] bool mask of the completion queries (Q = the most completion tokens of any row): query q
    of row r is position ``prefix_lengths[r] + q``; it sees the row's prompt and the earlier tokens of its own
    completion. Queries beyond the row's real tokens see nothing (:func:`prefix_attention_forward` skips them).

    >>> completion_attention(torch.tensor([[0, 0, 1, 1, 2]]), torch.tensor([2]), torch.tensor([5]))[0, 0].int()
    tensor([[1, 1, 1, 0, 0],
            [1, 1, 1, 1, 0],
            [1, 1, 0, 0, 1]], dtype=torch.int32)
    """
    queries = int((row_lengths - prefix_lengths).max()) if len(row_lengths) else 0
    attend = torch.zeros(segment.shape[0], 1, queries, segment.shape[1], dtype=torch.bool, device=segment.device)
    keys = torch.arange(segment.shape[1], device=segment.device)
    for row, (prompt, real) in enumerate(zip(prefix_lengths.tolist(), row_lengths.tolist())):
        positions = torch.arange(prompt, real, device=segment.device)
        own = segment[row, None, :] == segment[row, prompt:real, None]  # [real - prompt, T]
        attend[row, 0, : real - prompt] = (segment[row] == 0)[None, :] | (own & (keys[None, :] <= positions[:, None]))
    return attend


def segment_attention(segment: torch.Tensor) -> torch.Tensor:
    """The [R, 1, T, T] bool mask (True = may attend) of rows whose tokens carry segment ids: 0 = the prompt,
    j >= 1 = completion j, -1 = padding. Causal; a completion sees the prompt and itself; padding sees itself only
    (a query that sees nothing would give NaN)."""
    key, query = segment[:, None, :], segment[:, :, None]
    attend = key == query  # [R, T, T], the one full-size allocation; the rest is in place (a 16K row: 256 MB)
    attend |= key == 0
    attend &= (key >= 0) & (query >= 0)
    attend.tril_()  # causal
    attend.diagonal(dim1=1, dim2=2).logical_or_(segment < 0)  # padding sees itself only
    return attend[:, None]
