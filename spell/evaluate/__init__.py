"""Evaluation harness for the paper's six long-context benchmarks and the generic JSONL format (spec §9).

``formats``/``native`` read benchmark files, ``runner`` generates (resumably) and scores, ``judge`` is the
optional LLM judge, ``metrics`` computes avg@n / unbiased pass@k / the 4-column average, ``report`` writes
results.json, results.md and passk.png, and ``cli`` is ``spell eval``. Importing this package is cheap:
torch and transformers are only imported when a model is loaded.
"""

from spell.evaluate.formats import DataError, EvalItem, load_generic, write_generic_jsonl
from spell.evaluate.metrics import group_metrics, paper_average, pass_at_k, summarize
from spell.evaluate.native import load_benchmark

__all__ = [
    "DataError",
    "EvalItem",
    "group_metrics",
    "load_benchmark",
    "load_generic",
    "paper_average",
    "pass_at_k",
    "summarize",
    "write_generic_jsonl",
]
