"""Tests for spell/rl/metrics.py: timers, the metric logger, sample dumps, logging setup and the progress display."""

from __future__ import annotations

import importlib.util
import io
import json
import logging
import sys
import types
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
from rich.console import Console

import spell.rl.metrics as metrics
from spell.config import SpellConfig, config_to_dict
from spell.rl.metrics import MetricLogger, dump_samples, pop_timings, progress, setup_logging, stage_timer
from spell.types import TaskType


@pytest.fixture
def fake_clock(monkeypatch):
    """perf_counter returns the given ticks in order."""

    def install(*ticks: float) -> None:
        values = iter(ticks)
        monkeypatch.setattr(metrics, "time", SimpleNamespace(perf_counter=lambda: next(values)))

    pop_timings()  # start from a clean slate
    return install


def read_lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_stage_timer_accumulates_repeated_blocks(fake_clock):
    fake_clock(0.0, 1.0, 3.0, 6.0, 10.0, 10.5)
    with stage_timer("generate"):  # 0 -> 1: 1 s
        pass
    with stage_timer("generate"):  # 3 -> 6: 3 s
        pass
    with stage_timer("update"):  # 10 -> 10.5: 0.5 s
        pass
    assert pop_timings() == {"timing/generate_s": 4.0, "timing/update_s": 0.5}  # 1 + 3 = 4
    assert pop_timings() == {}  # reset


def test_stage_timer_nested_and_on_exception(fake_clock):
    fake_clock(0.0, 2.0, 5.0, 10.0)
    with pytest.raises(RuntimeError):
        with stage_timer("outer"):  # 0 -> 10
            with stage_timer("inner"):  # 2 -> 5
                pass
            raise RuntimeError("boom")
    assert pop_timings() == {"timing/outer_s": 10.0, "timing/inner_s": 3.0}


def test_log_writes_one_json_line_per_step(tmp_path):
    logger = MetricLogger(tmp_path)
    logger.log(1, {"train/loss": 0.5, "memory/size": 3, "flag": True, "bad": float("nan"), "big": float("inf")})
    assert read_lines(tmp_path / "metrics.jsonl") == [  # readable before close: flushed per line
        {"step": 1, "train/loss": 0.5, "memory/size": 3.0, "flag": 1.0, "bad": None, "big": None}
    ]
    logger.log(2, {"train/loss": 0.25})
    logger.close()
    assert [line["step"] for line in read_lines(tmp_path / "metrics.jsonl")] == [1, 2]


def test_log_rejects_non_numbers(tmp_path):
    with MetricLogger(tmp_path) as logger, pytest.raises(TypeError, match="'note' must be a number"):
        logger.log(1, {"note": "hello"})


def test_disabled_logger_writes_nothing(tmp_path):
    logger = MetricLogger(tmp_path / "run", enabled=False)
    logger.log(1, {"x": 1.0})
    logger.close()
    assert not (tmp_path / "run").exists()


def test_resume_truncates_later_steps_and_appends(tmp_path):
    with MetricLogger(tmp_path) as logger:
        for step in (1, 2, 3, 4):
            logger.log(step, {"x": float(step)})
    with (tmp_path / "metrics.jsonl").open("a") as handle:
        handle.write('{"step": 5, "x": 5.0')  # partial line from a crash
    with MetricLogger(tmp_path, resume_step=2) as logger:  # resumed from the step-2 checkpoint
        logger.log(3, {"x": 30.0})
    assert read_lines(tmp_path / "metrics.jsonl") == [{"step": 1, "x": 1.0}, {"step": 2, "x": 2.0},
                                                      {"step": 3, "x": 30.0}]


def test_truncate_after_on_open_logger_keeps_appending(tmp_path):
    logger = MetricLogger(tmp_path)
    for step in (1, 2, 3):
        logger.log(step, {"x": 0.0})
    assert logger.truncate_after(1) == 2  # steps 2 and 3 dropped
    logger.log(2, {"x": 1.0})
    logger.close()
    assert [(line["step"], line["x"]) for line in read_lines(tmp_path / "metrics.jsonl")] == [(1, 0.0), (2, 1.0)]


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is not None, reason="tensorboard is installed")
def test_tensorboard_missing_names_the_extra(tmp_path):
    with pytest.raises(ImportError, match=r"pip install 'spell-rl\[tensorboard\]'"):
        MetricLogger(tmp_path, tensorboard=True)


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="tensorboard not installed")
def test_tensorboard_writes_events(tmp_path):
    with MetricLogger(tmp_path, tensorboard=True) as logger:
        logger.log(1, {"train/loss": 1.0})
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed")
def test_wandb_missing_names_the_extra(tmp_path):
    with pytest.raises(ImportError, match=r"pip install 'spell-rl\[wandb\]'"):
        MetricLogger(tmp_path, wandb=True)


class _FakeWandbRun:
    """Fake of a W&B run (orchestration test): records what the logger hands over."""

    def __init__(self, **kwargs):
        self.init_kwargs, self.logged, self.finished = kwargs, [], False

    def log(self, metrics, step=None):
        self.logged.append((step, metrics))

    def finish(self):
        self.finished = True


class _FakeSummaryWriter:
    """Fake of TensorBoard's SummaryWriter (orchestration test)."""

    instances: list = []

    def __init__(self, log_dir, purge_step=None):
        self.texts, self.scalars = {}, []
        _FakeSummaryWriter.instances.append(self)

    def add_text(self, tag, text):
        self.texts[tag] = text

    def add_scalar(self, tag, value, global_step):
        self.scalars.append((tag, value, global_step))

    def flush(self):
        pass

    def close(self):
        pass


def test_wandb_and_tensorboard_receive_the_resolved_config(tmp_path, monkeypatch):
    runs = []
    fake_wandb = types.SimpleNamespace(init=lambda **kw: runs.append(_FakeWandbRun(**kw)) or runs[-1],
                                       util=types.SimpleNamespace(generate_id=lambda: "run123"))
    monkeypatch.setitem(sys.modules, "wandb", fake_wandb)
    fake_tensorboard = types.SimpleNamespace(SummaryWriter=_FakeSummaryWriter)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake_tensorboard)
    _FakeSummaryWriter.instances.clear()
    config = config_to_dict(SpellConfig())
    with MetricLogger(tmp_path, tensorboard=True, wandb=True, config=config) as logger:
        logger.log(1, {"train/loss": 0.5})
    assert runs[0].init_kwargs["config"] == config and runs[0].init_kwargs["config"]["grpo"]["lr"] == 2e-6
    assert runs[0].init_kwargs["config"]["train"]["mode"] == "spell"  # enums as plain strings
    assert (tmp_path / "wandb_run_id").read_text().strip() == "run123"
    text = _FakeSummaryWriter.instances[0].texts["config"]
    assert '"lr": 2e-06' in text and all(line.startswith("    ") for line in text.splitlines())


@dataclass(frozen=True)
class Point:
    x: float
    y: float


def test_dump_samples_writes_jsonl_with_fallbacks(tmp_path):
    path = tmp_path / "samples" / "step_000003.jsonl"  # parent folder is created
    dump_samples(path, [
        {"task": TaskType.DOC_MC, "reward": float("nan"), "votes": ("yes", "no")},  # enum -> value, NaN -> null
        {"point": Point(1.0, float("inf")), "ids": {3, 1}, "obj": object()},  # dataclass, set, str fallback
    ])
    first, second = read_lines(path)
    assert first == {"task": "doc_mc", "reward": None, "votes": ["yes", "no"]}
    assert second["point"] == {"x": 1.0, "y": None} and second["ids"] == [1, 3]
    assert second["obj"].startswith("<object object")


@pytest.fixture
def clean_root_logger():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    spell_level = logging.getLogger("spell").level
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger("spell").setLevel(spell_level)


def test_setup_logging_is_idempotent_and_rank_aware(clean_root_logger):
    setup_logging(rank=0)
    setup_logging(rank=0, level="DEBUG")
    ours = [h for h in clean_root_logger.handlers if getattr(h, "_spell_handler", False)]
    assert len(ours) == 1
    assert logging.getLogger("spell").level == logging.DEBUG
    setup_logging(rank=1)
    assert logging.getLogger("spell").level == logging.WARNING
    assert len([h for h in clean_root_logger.handlers if getattr(h, "_spell_handler", False)]) == 1


@pytest.mark.parametrize("enabled", [True, False])  # pytest's captured stderr is not a terminal either way
def test_progress_without_terminal_logs_one_line_per_step(caplog, enabled):
    with caplog.at_level(logging.INFO, logger="spell.rl.metrics"), progress(3, enabled=enabled) as display:
        display.update(1, {"responder/reward_mean": 0.123456, "train/loss": None})
        display.update(2, {"responder/reward_mean": 0.5})
    assert [r.getMessage() for r in caplog.records] == [
        "step 1/3  responder/reward_mean=0.1235  train/loss=nan",  # 4 significant digits
        "step 2/3  responder/reward_mean=0.5",
    ]


def test_progress_on_terminal_draws_a_bar(caplog):
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=120)
    with caplog.at_level(logging.INFO, logger="spell.rl.metrics"), progress(4, console=console) as display:
        display.update(2, {"train/loss": 0.75})
    assert "2/4" in buffer.getvalue() and "train/loss=0.75" in buffer.getvalue()
    assert not caplog.records  # no per-step log lines when the bar is shown
