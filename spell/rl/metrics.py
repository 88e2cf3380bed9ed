"""Visibility: logging setup, per-stage timers, the metric logger, sample dumps and a progress display.

Metric keys follow ``"{role}/{metric}"``, ``train/*``, ``timing/<stage>_s`` (STYLE §4.1, §4.3). Metrics go to
``{output_dir}/metrics.jsonl`` (one ``{"step": k, ...}`` object per line, NaN/inf written as null) and
optionally to TensorBoard (``[tensorboard]`` extra) and Weights & Biases (``[wandb]`` extra). Only the main
process should log (``enabled=False`` elsewhere). Sample dumps (``samples/step_XXXXXX.jsonl``) are JSONL.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

logger = logging.getLogger(__name__)

_CONSOLE = Console(stderr=True)  # shared by the log handler and the progress bar so they do not fight
_TIMINGS: defaultdict[str, float] = defaultdict(float)


def setup_logging(rank: int = 0, level: str = "INFO") -> None:
    """Route logs through one rich handler on the root logger; ``spell.*`` at ``level`` on rank 0, else WARNING.

    Other libraries stay at WARNING. Calling it again replaces the handler (idempotent).

    Args:
        rank: process rank; only rank 0 logs below WARNING.
        level: level name for the ``spell`` loggers on rank 0.
    """
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_spell_handler", False)]:
        root.removeHandler(handler)
    handler = RichHandler(console=_CONSOLE, show_path=False, rich_tracebacks=True, markup=False)
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    handler._spell_handler = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    if root.level == logging.NOTSET or root.level > logging.WARNING:
        root.setLevel(logging.WARNING)
    logging.getLogger("spell").setLevel(level.upper() if rank == 0 else logging.WARNING)


@contextmanager
def stage_timer(name: str) -> Iterator[None]:
    """Add the wall time of the ``with`` block to the ``timing/<name>_s`` total (also on exceptions).

    Repeated blocks with one name add up; nested blocks each count their own full time.
    """
    start = time.perf_counter()
    try:
        yield
    finally:
        _TIMINGS[name] += time.perf_counter() - start


def pop_timings() -> dict[str, float]:
    """The accumulated stage times as ``{"timing/<name>_s": seconds}``, and reset them."""
    timings = {f"timing/{name}_s": seconds for name, seconds in _TIMINGS.items()}
    _TIMINGS.clear()
    return timings


def _jsonable(value: object) -> object:
    """Make ``value`` strict JSON: non-finite floats -> None, recursively through dicts/lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _fallback(value: object) -> object:
    """``json.dumps`` default: dataclasses as dicts, sets as lists, everything else as ``str``."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable(dataclasses.asdict(value))
    if isinstance(value, set | frozenset):
        return _jsonable(sorted(value, key=str))
    return str(value)


def _to_float(key: str, value: object) -> float | None:
    try:
        number = float(value)  # also 0-d tensors, numpy scalars, bools, ints
    except (TypeError, ValueError) as err:
        raise TypeError(f"metric {key!r} must be a number, got {type(value).__name__}") from err
    return number if math.isfinite(number) else None


class MetricLogger:
    """Write one line of scalar metrics per step to ``metrics.jsonl`` (+ TensorBoard / W&B if asked).

    Args:
        output_dir: the run folder.
        tensorboard: also write TensorBoard events to ``output_dir/tensorboard``.
        wandb: also log to Weights & Biases (mode from ``WANDB_MODE``; the run id is kept in
            ``output_dir/wandb_run_id`` so a resumed run continues the same W&B run).
        wandb_project: W&B project name.
        config: the resolved run configuration (a plain dict): the W&B run's config, and a ``config`` text
            entry in TensorBoard.
        enabled: False on non-main processes: every call is a no-op.
        resume_step: when resuming from a checkpoint at this step, drop logged lines after it first.

    Raises:
        ImportError: a requested backend is not installed (names the extra to install).
    """

    def __init__(self, output_dir: str | Path, *, tensorboard: bool = False, wandb: bool = False,
                 wandb_project: str = "spell-rl", config: dict | None = None, enabled: bool = True,
                 resume_step: int | None = None) -> None:
        self.enabled = enabled
        self.path = Path(output_dir) / "metrics.jsonl"
        self._file = None
        self._tensorboard = None
        self._wandb = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None:
            self.truncate_after(resume_step)
        self._file = self.path.open("a", encoding="utf-8")
        if tensorboard:
            self._tensorboard = _open_tensorboard(Path(output_dir), resume_step, config)
        if wandb:
            self._wandb = _open_wandb(Path(output_dir), wandb_project, config)

    def log(self, step: int, metrics: Mapping[str, object]) -> None:
        """Append ``{"step": step, **metrics}``; values must be numbers (NaN/inf are written as null).

        Raises:
            TypeError: a value is not convertible to float.
        """
        if not self.enabled:
            return
        values = {key: _to_float(key, value) for key, value in metrics.items()}
        self._file.write(json.dumps({"step": step, **values}, allow_nan=False) + "\n")
        self._file.flush()
        finite = {key: value for key, value in values.items() if value is not None}
        if self._tensorboard is not None:
            for key, value in finite.items():
                self._tensorboard.add_scalar(key, value, global_step=step)
            self._tensorboard.flush()
        if self._wandb is not None:
            self._wandb.log(finite, step=step)

    def truncate_after(self, step: int) -> int:
        """Drop lines with a step greater than ``step`` (and unreadable lines from a crash).

        Used when resuming from a checkpoint at ``step``, so the file never holds a step twice.

        Returns:
            How many lines were dropped.
        """
        if not self.enabled or not self.path.is_file():
            return 0
        kept, dropped = [], 0
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                keep = json.loads(line)["step"] <= step
            except (json.JSONDecodeError, KeyError, TypeError):
                keep = False
            if keep:
                kept.append(line + "\n")
            else:
                dropped += 1
        reopen = self._file is not None
        if reopen:
            self._file.close()
        tmp = self.path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(kept), encoding="utf-8")
        os.replace(tmp, self.path)
        if reopen:
            self._file = self.path.open("a", encoding="utf-8")
        if dropped:
            logger.info("dropped %d line(s) after step %d from %s", dropped, step, self.path)
        return dropped

    def close(self) -> None:
        """Flush and close every backend."""
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None

    def __enter__(self) -> MetricLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _open_tensorboard(output_dir: Path, resume_step: int | None, config: dict | None):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as err:
        raise ImportError("logging.tensorboard=true needs TensorBoard: pip install 'spell-rl[tensorboard]'") from err
    purge_step = None if resume_step is None else resume_step + 1  # hide events of the abandoned steps
    writer = SummaryWriter(log_dir=str(output_dir / "tensorboard"), purge_step=purge_step)
    if config is not None:  # indented 4 spaces: TensorBoard renders text as markdown, this keeps it verbatim
        text = json.dumps(config, indent=2, sort_keys=True)
        writer.add_text("config", "\n".join("    " + line for line in text.splitlines()))
    return writer


def _open_wandb(output_dir: Path, project: str, config: dict | None):
    try:
        import wandb
    except ImportError as err:
        raise ImportError("logging.wandb=true needs Weights & Biases: pip install 'spell-rl[wandb]'") from err
    id_file = output_dir / "wandb_run_id"
    run_id = id_file.read_text().strip() if id_file.is_file() else wandb.util.generate_id()
    id_file.write_text(run_id + "\n")
    return wandb.init(project=project, config=config, dir=str(output_dir), id=run_id, resume="allow")


def dump_samples(path: str | Path, records: list[dict]) -> None:
    """Write ``records`` as JSONL to ``path`` (parents created). Non-JSON values become dicts/lists/strings.

    Args:
        path: e.g. ``{output_dir}/samples/step_000003.jsonl``.
        records: one dict per sample (texts, statuses, rewards, ...).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(_jsonable(record), default=_fallback, ensure_ascii=False) + "\n")


def format_summary(summary: Mapping[str, float]) -> str:
    """``"key=value  key=value"`` with 4 significant digits (``None``/NaN shown as ``nan``)."""
    return "  ".join(f"{key}={float('nan') if value is None else value:.4g}" for key, value in summary.items())


class _StepDisplay:
    """What :func:`progress` yields: ``update(step, summary)`` per finished step."""

    def __init__(self, total: int, bar: Progress | None) -> None:
        self.total = total
        self._bar = bar
        self._task = bar.add_task("step", total=total, summary="") if bar is not None else None

    def update(self, step: int, summary: Mapping[str, float]) -> None:
        """Show that ``step`` steps are done, with a few key numbers."""
        text = format_summary(summary)
        if self._bar is None:
            logger.info("step %d/%d  %s", step, self.total, text)
        else:
            self._bar.update(self._task, completed=step, summary=text)
            self._bar.refresh()


@contextmanager
def progress(total: int, enabled: bool = True, console: Console | None = None) -> Iterator[_StepDisplay]:
    """A step progress bar on a terminal; otherwise (or when disabled) one log line per step.

    Args:
        total: number of steps (``train.max_steps``).
        enabled: ``logging.progress`` (and main process).
        console: rich console to draw on (default: the shared stderr console).

    Yields:
        An object with ``update(step, summary: dict[str, float])``.
    """
    console = console or _CONSOLE
    if not enabled or not console.is_terminal:
        yield _StepDisplay(total, None)
        return
    columns = (TextColumn("[bold]step"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn(), TextColumn("{task.fields[summary]}", markup=False))
    with Progress(*columns, console=console, auto_refresh=False, transient=False) as bar:
        yield _StepDisplay(total, bar)
