"""Settings of the built-in policy's bootstrap (issue 5): one frozen dataclass, torch-free.

:class:`BootstrapConfig`'s defaults are the shipped run (``spell init-default`` with no flags); ``QUICK``
shrinks every budget for an end-to-end check of the pipeline in a few minutes.
"""

from __future__ import annotations

from dataclasses import dataclass

from spell.builtin.defaults import SHIPPED_POLICY


@dataclass(frozen=True)
class BootstrapConfig:
    """Every knob of the bootstrap (the CLI flags mirror these names).

    Attributes:
        out: output folder of the policy (default: the package's shipped ``assets/default_policy``).
        seed: training seed (data order, initialisation); world_seed: the world the data comes from.
        num_sets: train document sets used (the last 50 are a validation split, never trained on).
        vocab_size, hidden, layers, heads, kv_heads: tokenizer and Qwen2 sizes.
        threads: torch CPU threads (the result is bit-identical only for the same count and machine type).
        copy_steps, retrieval_steps, qa_short_steps, qa_steps, roles_steps: optimizer steps per stage (the
            copy stage ends early once induction has formed).
        batch_tokens: padded tokens per batch; *_lr: peak learning rates.
        eval_samples, questioner_per_task, probe_per_task: sizes of the measurements; eval: measure at all.
    """

    out: str = str(SHIPPED_POLICY)
    seed: int = 0
    world_seed: int = 0
    num_sets: int = 1000
    vocab_size: int = 1024
    hidden: int = 192
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    threads: int = 2
    copy_steps: int = 1500
    retrieval_steps: int = 500
    qa_short_steps: int = 700
    qa_steps: int = 800
    roles_steps: int = 1200
    batch_tokens: int = 6144
    synthetic_lr: float = 3e-3
    qa_lr: float = 2e-3
    roles_lr: float = 1e-3
    eval_samples: int = 8
    questioner_per_task: int = 60
    probe_per_task: int = 16
    eval: bool = True


QUICK = {"num_sets": 120, "copy_steps": 20, "retrieval_steps": 20, "qa_short_steps": 20, "qa_steps": 20,
         "roles_steps": 30, "eval_samples": 2, "questioner_per_task": 6, "probe_per_task": 2}
