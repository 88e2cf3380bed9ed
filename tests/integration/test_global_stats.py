"""Batch-level statistics under torchrun (2 CPU ranks, gloo): one launch of tests/integration/_global_stats_driver.py.

Each rank builds its part of a hand-made toy batch with :func:`spell.experience.build_batch`; the questioner z-score
(Eq. 9) and the verifier quota must span both ranks, i.e. equal one process building the union batch.
Run: .venv/bin/python -m pytest tests/integration/test_global_stats.py
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from spell.experience import build_batch
from spell.sampling import draw_verifier_groups, draw_verifier_groups_by_rank
from tests.integration._global_stats_driver import toy_ctx, toy_part

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("global_stats")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), str(ROOT / "tests" / "integration" / "_global_stats_driver.py"),
           "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]


def _advantages(rows, role):
    return {(r["group_id"], r["index"]): r["advantage"] for r in rows if r["role"] == role}


def test_questioner_advantages_span_both_ranks(ranks):
    assert [r["world_size"] for r in ranks] == [2, 2]
    got = {**_advantages(ranks[0]["samples"], "questioner"), **_advantages(ranks[1]["samples"], "questioner")}
    # per task over the union: QA [.9 (r0), -1 (r0 bad), .5 (r1)]: mean .4/3, dev (.76667, -1.13333, .36667),
    #   sq sum 2.006667, unbiased std sqrt(1.003333) = 1.001665 -> (.76539, -1.13145, .36606)
    #   MC [.3 (r0), 0 (r1 zero_variance)]: mean .15, std .212132 -> (.70711, -.70711)
    # (rank by rank, rank 1's lone QA .5 would get .5 and its lone MC 0 would get 0)
    expected = {"r0-qa": 0.76539, "r0-bad": -1.13145, "r1-qa": 0.36606, "r0-mc": 0.70711, "r1-zero": -0.70711}
    assert {uid: adv for (uid, _), adv in got.items()} == pytest.approx(expected, abs=1e-5)
    # and equal to one process building the union batch (same sums in another order: float noise only)
    union = [toy_part(0), toy_part(1)]
    kept, records, pool = ([*a, *b] for a, b in zip(*union, strict=True))
    one = build_batch(kept, records, pool, toy_ctx(0))
    reference = {(s.group_id, s.meta.get("index")): s.advantage for s in one if s.role.value == "questioner"}
    assert got == pytest.approx(reference, rel=1e-12, abs=1e-12)
    responders = {**_advantages(ranks[0]["samples"], "responder"), **_advantages(ranks[1]["samples"], "responder")}
    assert responders == {(s.group_id, s.meta["index"]): s.advantage for s in one if s.role.value == "responder"}


def test_verifier_quota_is_global_and_the_draw_is_shared(ranks):
    (gathered0,), (gathered1,) = (r["gathered"] for r in ranks)  # exactly one collective per build_batch
    assert gathered0 == gathered1
    seed = gathered0[0]["verifier_seed"]
    assert isinstance(seed, int) and gathered0[1]["verifier_seed"] is None  # rank 0's seed drives the draw
    assert [(g["num_responder"], g["verifier_pool_size"]) for g in gathered0] == [(8, 1), (4, 3)]
    # global quota int((8 + 4) * .5 / 2) = 3 groups of the 1 + 3 in the union pool.
    # Rank by rank (the old rule): rank 0 quota int(8 * .5 / 2) = 2 > its 1 group -> skipped; rank 1 quota 1.
    assert draw_verifier_groups(["g"], 8, 0.5, 2, random.Random(0)) == []
    share = draw_verifier_groups_by_rank([1, 3], [8, 4], 0.5, 2, random.Random(seed))
    groups = [Counter(r["group_id"] for r in rank["samples"] if r["role"] == "verifier") for rank in ranks]
    assert sum(len(g) for g in groups) == 3 and all(n == 2 for g in groups for n in g.values())  # G_v = 2 each
    owner_uid = {0: "r0-qa", 1: "r1-qa"}
    assert [sorted(g) for g in groups] == [sorted(f"{owner_uid[r]}/{i}" for i in share[r]) for r in (0, 1)]
