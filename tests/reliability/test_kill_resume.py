"""Kill ``spell train`` with SIGKILL at random moments, resume it, and get the uninterrupted run bit for bit.

Each case starts a real ``python -m spell.cli train`` into a fresh folder and kills it: at a delay drawn from a
seeded RNG within the reference run's wall time, or (one case) the moment a checkpoint's temp folder appears,
i.e. mid-save. Then it does what a user would: ``spell train --resume DIR`` until it exits 0; a run killed
before its first checkpoint cannot be resumed (exit 2), so it is started again (``--overwrite`` if the fresh
start is refused because the folder holds the killed run). One case kills the first resume as well.

The result must equal one uninterrupted run: final weights bit for bit, every metrics row (``timing/*`` aside)
and every samples file, steps 0..K once each in ``metrics.jsonl``, no temp folder left under ``checkpoints/``.

The run is the built-in preset (shipped tiny policy, built-in world) at small sizes, about 2 s a step on CPU
with the real HF engine: its questions parse, so every step makes a real GRPO update. A random tiny policy
(``tiny_policy_dir``) writes no parseable question, every batch is empty and the weights never change, so
"same weights" would prove nothing. Slow (about 2-3 minutes): ``pytest -m slow tests/reliability``.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

MAX_STEPS = 4
RUN_ARGS = ("--config", "builtin", "data.questions_per_round=4", "train.max_rounds=1", "train.batch_groups=1",
            "responder.group_size=4", "verifier.num_votes=2", f"train.max_steps={MAX_STEPS}",
            "train.save_every_steps=1", "eval.limit=2", "logging.progress=false")
PROCESS_TIMEOUT_S = 900  # one `spell train` on a loaded 2-core machine; ~20 s when idle
MAX_LAUNCHES = 6
# (seed, kill mode, kill the first relaunch too)
CASES = [(11, "random", False), (12, "random", False), (13, "random", True), (14, "mid_save", False)]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false"}


def _temp_entries(run: Path) -> list[str]:
    root = run / "checkpoints"
    return sorted(p.name for p in root.glob(".tmp*")) if root.is_dir() else []


def _where(run: Path) -> str:
    """What a killed run left behind: complete checkpoints and temp (half-saved) folders."""
    from spell.rl.checkpoint import latest_checkpoint

    latest = latest_checkpoint(run) if run.is_dir() else None
    temps = _temp_entries(run)
    return f"latest complete {latest.name if latest else None}" + (f", mid-save (temp {temps})" if temps else "")


def _kill_after(delay: float):
    def kill(proc: subprocess.Popen) -> bool:
        try:
            proc.wait(timeout=delay)
            return False
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            return True

    return kill


def _kill_mid_save(run: Path, step: int, extra: float):
    """Kill ``extra`` seconds after step ``step``'s temp checkpoint folder appears."""
    def kill(proc: subprocess.Popen) -> bool:
        deadline = time.monotonic() + PROCESS_TIMEOUT_S
        while proc.poll() is None and time.monotonic() < deadline:
            root = run / "checkpoints"
            if root.is_dir() and any(root.glob(f".tmp*{step:06d}*")):
                time.sleep(extra)
                proc.send_signal(signal.SIGKILL)
                return True
            time.sleep(0.002)
        return False

    return kill


def _launch(args: list[str], log: Path, cwd: Path, kill=None) -> int | None:
    """Run ``spell train ARGS`` (output to ``log``); None if ``kill`` killed it, else its exit code."""
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "spell.cli", "train", *args], stdout=out,
                                stderr=subprocess.STDOUT, env=_env(), cwd=cwd)
        try:
            if kill is not None and kill(proc):
                proc.wait(timeout=60)
                return None
            return proc.wait(timeout=PROCESS_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise


def _tail(log: Path, n: int = 15) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-n:])


def _start_again(run: Path, logs: Path, i: int, kill) -> tuple[int | None, list[str]]:
    """A run killed before its first checkpoint: start it again, with --overwrite if the folder is refused."""
    args = [*RUN_ARGS, f"output_dir={run}"]
    log = logs / f"{i}_fresh.log"
    rc = _launch(args, log, logs, kill)
    if rc == 2 and "--overwrite" in log.read_text(errors="replace"):
        log = logs / f"{i}_fresh_overwrite.log"
        rc = _launch(["--overwrite", *args], log, logs, kill)
        return rc, [f"fresh start refused (exit 2), restarted with --overwrite -> {rc}"]
    return rc, [f"fresh start -> {rc}"]


def _resume_until_done(run: Path, logs: Path, rng: random.Random, ref_s: float, kill_once: bool) -> list[str]:
    """Relaunch like a user until a run exits 0; returns what happened, for the report."""
    from spell.rl.checkpoint import latest_checkpoint

    events = []
    for i in range(MAX_LAUNCHES):
        kill = None
        if kill_once and i == 0:
            delay = rng.uniform(0.1, 1.0) * ref_s
            kill = _kill_after(delay)
            events.append(f"relaunch to be killed at {delay:.2f} s")
        log = logs / f"{i}_resume.log"
        rc = _launch(["--resume", str(run)], log, logs, kill)
        if rc is None:
            events.append(f"resume killed: {_where(run)}")
            continue
        if rc == 0:
            return [*events, "resume -> 0"]
        assert rc == 2 and latest_checkpoint(run) is None, \
            f"resume exit {rc} with checkpoint {latest_checkpoint(run)}; {events}\n{_tail(log)}"
        events.append("resume refused (no checkpoint yet, exit 2)")
        rc, notes = _start_again(run, logs, i, kill)
        events += notes
        if rc is None:
            events.append(f"fresh start killed: {_where(run)}")
            continue
        assert rc == 0, f"fresh start exit {rc}; {events}\n{_tail(logs / f'{i}_fresh.log')}"
        return events
    raise AssertionError(f"no launch completed in {MAX_LAUNCHES} tries: {events}")


def _rows(run: Path) -> list[str]:
    """metrics.jsonl rows without timings, as canonical JSON (so NaN == NaN)."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [json.dumps({k: v for k, v in row.items() if not k.startswith("timing/")}, sort_keys=True)
            for row in rows]


def _final_weights(run: Path) -> dict:
    from spell.rl.checkpoint import latest_checkpoint
    from spell.rl.export import load_checkpoint_model

    ckpt = latest_checkpoint(run)
    assert ckpt is not None and ckpt.name == f"step_{MAX_STEPS:06d}", f"{run}: last checkpoint {ckpt}"
    return load_checkpoint_model(ckpt).state_dict()


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, float]:
    """One uninterrupted run, and its wall time (the window the kills are drawn from)."""
    root = tmp_path_factory.mktemp("reference")
    run = root / "run"
    start = time.monotonic()
    rc = _launch([*RUN_ARGS, f"output_dir={run}"], root / "train.log", root)
    assert rc == 0, _tail(root / "train.log")
    return run, time.monotonic() - start


@pytest.mark.parametrize("seed, mode, kill_relaunch", CASES,
                         ids=[f"seed{s}-{m}{'-relaunch-killed' if k else ''}" for s, m, k in CASES])
def test_killed_and_resumed_run_equals_the_uninterrupted_run(reference, tmp_path, seed, mode, kill_relaunch):
    import torch

    ref_run, ref_s = reference
    rng = random.Random(seed)
    run = tmp_path / "run"
    if mode == "mid_save":
        step, extra = rng.randint(2, MAX_STEPS), rng.uniform(0.0, 0.03)  # step 1: same as "no checkpoint yet"
        kill, planned = _kill_mid_save(run, step, extra), f"kill {extra * 1000:.0f} ms into step {step}'s save"
    else:
        delay = rng.uniform(0.1, 1.0) * ref_s
        kill, planned = _kill_after(delay), f"kill at {delay:.2f} s (reference run {ref_s:.1f} s)"
    rc = _launch([*RUN_ARGS, f"output_dir={run}"], tmp_path / "first.log", tmp_path, kill)
    assert rc in (None, 0), f"seed {seed}: first run exit {rc}\n{_tail(tmp_path / 'first.log')}"
    events = [planned, f"first run: {'killed, ' + _where(run) if rc is None else f'finished first, exit {rc}'}"]
    if rc is None:
        events += _resume_until_done(run, tmp_path, rng, ref_s, kill_relaunch)
    print(f"seed {seed}: " + "; ".join(events))
    report = f"seed {seed} (logs in {tmp_path}): {events}"

    steps = Counter(json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines())
    assert all(steps[s] == 1 for s in range(1, MAX_STEPS + 1)) and max(steps.values()) == 1, f"{steps}; {report}"
    assert _rows(run) == _rows(ref_run), report
    ref_samples = sorted(p.name for p in (ref_run / "samples").iterdir())
    assert sorted(p.name for p in (run / "samples").iterdir()) == ref_samples, report
    for name in ref_samples:
        assert (run / "samples" / name).read_bytes() == (ref_run / "samples" / name).read_bytes(), f"{name}; {report}"
    assert _temp_entries(run) == [], report
    got, want = _final_weights(run), _final_weights(ref_run)
    assert got.keys() == want.keys(), report
    differ = [name for name in want if not torch.equal(got[name], want[name])]
    assert not differ, f"weights differ in {differ[:5]}; {report}"
