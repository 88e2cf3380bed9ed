"""Worker script for test_global_stats.py, launched by ``python -m torch.distributed.run --nproc_per_node 2``.

Each rank joins a gloo group and calls :func:`spell.experience.build_batch` on its own hand-made part of a toy
batch (:func:`toy_part`, no model, no engine), then writes its samples and what the gather returned to
``{out}/rank{r}.json``. The test rebuilds the union batch in one process and compares.

Toy batch (responder.group_size 4, verifier.num_votes 2, verifier.update_ratio .5):
- rank 0: kept QA (questioner reward .9) and MC (.3), a bad_format QA negative (-1); 1 trainable verifier group.
- rank 1: kept QA (.5), a zero_variance MC negative (0); 3 trainable verifier groups.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path
from types import SimpleNamespace

from spell.config import load_config
from spell.experience import build_batch
from spell.rl import distributed
from spell.selfplay import QuestionRecord
from spell.types import Completion, DocSet, QuestionStatus, TaskType, Verdict

OVERRIDES = ["responder.group_size=4", "verifier.num_votes=2", "verifier.update_ratio=0.5",
             "questioner.bad_case_ratio=1.0", "verifier.enable=true", "verifier.enable_update=true",
             "questioner.enable_update=true"]
QA, MC = TaskType.DOC_GENERAL_QA, TaskType.DOC_MC


def _record(uid: str, task: TaskType, questioner_reward: float, rewards: list[float] | None = None,
            status: QuestionStatus = QuestionStatus.VALID) -> QuestionRecord:
    record = QuestionRecord(uid, DocSet(f"set-{uid}", ("doc",), task), (0,), [], [1, 2],
                            completion=Completion("question", (3, 4)), status=status,
                            questioner_reward=questioner_reward)
    if rewards:  # answered: G responses, each verified by G_v = 2 votes YES/NO (agreement 1/2)
        record.responder_prompt_ids = [5]
        record.responses = [Completion(f"answer {i}", (6, i)) for i in range(len(rewards))]
        record.rewards = list(rewards)
        record.rule_scores = list(rewards)
        record.verifier_prompt_ids = [[7, i] for i in range(len(rewards))]
        record.verdict_completions = [[Completion("yes", (8,)), Completion("no", (9,))] for _ in rewards]
        record.votes = [[Verdict.YES, Verdict.NO] for _ in rewards]
        record.majorities = [Verdict.YES for _ in rewards]
    return record


def toy_part(rank: int) -> tuple[list[QuestionRecord], list[QuestionRecord], list[tuple[QuestionRecord, int]]]:
    """Rank ``rank``'s kept records, all its records and its trainable verifier groups (see the module docstring)."""
    if rank == 0:
        kept = [_record("r0-qa", QA, 0.9, [1.0, 0.0, 1.0, 0.0]), _record("r0-mc", MC, 0.3, [1.0, 1.0, 0.0, 0.0])]
        negatives = [_record("r0-bad", QA, -1.0, status=QuestionStatus.BAD_FORMAT)]
        pool = [(kept[0], 0)]
    else:
        kept = [_record("r1-qa", QA, 0.5, [1.0, 0.0, 0.0, 0.0])]
        negatives = [_record("r1-zero", MC, 0.0, status=QuestionStatus.ZERO_VARIANCE)]
        pool = [(kept[0], 0), (kept[0], 1), (kept[0], 2)]
    return kept, kept + negatives, pool


def toy_ctx(rank: int) -> SimpleNamespace:
    """What build_batch reads from a SelfPlayContext: cfg, the per-rank self-play RNG and the temperature."""
    cfg = load_config("tiny_cpu", OVERRIDES)
    return SimpleNamespace(cfg=cfg, rng=random.Random(f"toy/{rank}"), temperature=cfg.sampling.temperature)


def sample_rows(samples) -> list[dict]:
    return [{"role": s.role.value, "task": str(s.task), "group_id": s.group_id, "index": s.meta.get("index"),
             "reward": s.reward, "advantage": s.advantage} for s in samples]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    info = distributed.init_distributed("cpu")
    gathered = []
    gather_objects = distributed.gather_objects

    def spy(obj):  # record what the collective returned (build_batch must make exactly one)
        gathered.append(gather_objects(obj))
        return gathered[-1]

    distributed.gather_objects = spy
    kept, records, pool = toy_part(info.rank)
    samples = build_batch(kept, records, pool, toy_ctx(info.rank))
    result = {"rank": info.rank, "world_size": info.world_size, "samples": sample_rows(samples),
              "gathered": [[vars(r) for r in ranks] for ranks in gathered]}
    Path(args.out, f"rank{info.rank}.json").write_text(json.dumps(result))
    distributed.cleanup()


if __name__ == "__main__":
    main()
