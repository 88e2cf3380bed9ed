"""scripts/gpu_check.sh, the prepared GPU check: its --dry-run checks its own set-up on this CPU machine (the CUDA
test modules import and are collected, the tiny policy and corpus build, both `spell train` commands validate)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"


def _check(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", **env})


def test_dry_run_checks_the_set_up_and_prints_one_summary_line():
    proc = _check("--dry-run")
    last = proc.stdout.strip().splitlines()[-1]
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert last.startswith("gpu_check: dry-run ok | device: none; torch ")
    assert "pytest tests/gpu:" in last and "spell train full: command valid" in last
    assert "spell train lora: command valid" in last


def test_a_broken_set_up_fails_the_dry_run(tmp_path):
    # a python that cannot import the project (an empty PYTHONPATH entry first would not hide it: run elsewhere)
    fake = tmp_path / "python3"
    fake.write_text(f"#!/bin/sh\nexec {sys.executable} -S \"$@\"\n")  # -S: no site-packages, so no torch
    fake.chmod(0o755)
    proc = _check("--dry-run", PYTHON=str(fake))
    assert proc.returncode == 1 and "gpu_check: dry-run FAILED" in proc.stdout


def test_an_unknown_argument_exits_2():
    assert _check("--bogus").returncode == 2
