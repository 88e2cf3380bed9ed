"""Reports (results.json, the Table-1-shaped markdown, the pass@k PNG) and ``run_eval`` with a scripted engine:
exit codes and one-line messages for bad input, outputs, resume, --compare.

Run: .venv/bin/python -m pytest tests/unit/test_eval_report.py -q
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from spell.evaluate import cli
from spell.evaluate.report import ResultsFileError, load_results, plot_passk, render_markdown

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "eval"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _results(avg: float, lb_mqa: float = 0.5) -> dict:
    row = {
        "num_questions": 2,
        "n": 8,
        "avg@n": avg,
        "pass@1": avg,
        "pass@2": avg + 0.1,
        "pass@4": avg + 0.2,
        "pass@8": avg + 0.3,
        "buckets": {"short": {"num_questions": 2, "n": 8, "avg@n": avg}},
    }
    results = {name: dict(row) for name in ("docmath", "frames", "longbench_v2")}
    results["hotpotqa"] = dict(row, **{"avg@n": lb_mqa})
    columns = {
        "DocMath": {"avg@n": avg},
        "Frames": {"avg@n": avg},
        "LB-MQA": {"avg@n": lb_mqa},
        "LB-V2": {"avg@n": avg},
    }
    results["average"] = {
        "avg@n": (3 * avg + lb_mqa) / 4,
        "pass@1": avg,
        "pass@8": avg + 0.3,
        "columns": columns,
        "missing": [],
        "complete": True,
    }
    return results


def test_markdown_has_a_table1_row_in_percent():
    text = render_markdown(_results(0.25), "my-model")
    assert "| Model | DocMath | Frames | LB-MQA | LB-V2 | Avg. |" in text
    assert "| my-model | 25.0 | 25.0 | 50.0 | 25.0 | **31.2** |" in text  # (3 x 25 + 50) / 4 = 31.25
    assert "| docmath | 2 | 8 | 25.0 | 25.0 | 35.0 | 45.0 | 55.0 |" in text  # avg@n, pass@1, 2, 4, 8
    assert "| frames | short | 2 | 25.0 |" in text


def test_markdown_with_compare_shows_both_rows_and_the_gain():
    text = render_markdown(_results(0.40), "spell", compare=_results(0.25), compare_label="base")
    assert "| base | 25.0 | 25.0 | 50.0 | 25.0 | **31.2** |" in text
    assert "| spell | 40.0 | 40.0 | 50.0 | 40.0 | **42.5** (+11.3) |" in text  # printed 42.5 - 31.2 = 11.3


def test_plot_writes_a_png_with_and_without_compare(tmp_path):
    assert plot_passk(_results(0.3), tmp_path / "a.png", "m").read_bytes()[:8] == PNG_MAGIC
    path = plot_passk(_results(0.3), tmp_path / "b.png", "m", compare=_results(0.2), compare_label="base")
    assert path.read_bytes()[:8] == PNG_MAGIC


@pytest.mark.parametrize(
    "content, expected",
    [
        (None, "file not found"),
        ("{oops", "not readable JSON"),
        ('{"frames": {}}', "no 'average' entry"),
    ],
)
def test_load_results_errors(tmp_path, content, expected):
    path = tmp_path / "results.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ResultsFileError, match=expected):
        load_results(path)


# ---- run_eval with a scripted engine instead of a model ----


class EchoTokenizer:
    chat_template = None

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict:
        return {"input_ids": [ord(ch) for ch in text[-300:]]}  # enough to find the question


class FixedEngine:
    """Always answers "The correct answer is B." (right for the LB-V2 fixture's second question only)."""

    def __init__(self) -> None:
        self.tokenizer = EchoTokenizer()
        self.samples = 0

    def generate(self, prompts, sampling, n=1):
        from spell.types import Completion

        self.samples += n * len(prompts)
        return [[Completion("The correct answer is B.", (1,), tuple(p)) for _ in range(n)] for p in prompts]

    def sync_weights(self, model) -> None:
        pass


@pytest.fixture
def scripted(monkeypatch):
    engines: list[FixedEngine] = []

    def factory(args, model_path):
        def build():
            engines.append(FixedEngine())
            return engines[-1]

        return build

    monkeypatch.setattr(cli, "_engine_factory", factory)
    return engines


def _args(tmp_path: Path, *extra: str) -> argparse.Namespace:
    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    (model / "config.json").write_text("{}")
    parser = argparse.ArgumentParser()
    cli.add_eval_arguments(parser)
    base = ["--model", str(model), "--data-dir", str(ASSETS), "--output-dir", str(tmp_path / "out"), "--n", "2"]
    return parser.parse_args(base + list(extra))


def test_run_eval_writes_all_outputs_and_resumes(tmp_path, scripted):
    args = _args(tmp_path, "--benchmarks", f"longbench_v2,jsonl:{ASSETS / 'generic.jsonl'}")
    assert cli.run_eval(args) == 0
    out = tmp_path / "out"
    results = json.loads((out / "results.json").read_text())
    assert results["longbench_v2"]["avg@n"] == 0.5  # "B" is right for 1 of 2 questions
    assert results["longbench_v2"]["pass@2"] == 0.5 and "pass@4" not in results["longbench_v2"]
    assert results["generic"]["avg@n"] == pytest.approx(1 / 3)  # only the MC question (answer B)
    assert results["average"]["columns"]["LB-V2"]["avg@n"] == 0.5
    assert "| Model | DocMath | Frames | LB-MQA | LB-V2 | Avg. |" in (out / "results.md").read_text()
    assert (out / "passk.png").read_bytes()[:8] == PNG_MAGIC
    lines = (out / "generations.jsonl").read_text().splitlines()
    assert len(lines) == 10  # (2 + 3 questions) x n = 2
    assert cli.run_eval(args) == 0
    assert len(scripted) == 1 and scripted[0].samples == 10  # the re-run built no engine
    assert (out / "generations.jsonl").read_text().splitlines() == lines


def test_run_eval_compare_adds_the_other_run(tmp_path, scripted):
    first = _args(tmp_path, "--benchmarks", "longbench_v2")
    assert cli.run_eval(first) == 0
    second = _args(tmp_path, "--benchmarks", "longbench_v2", "--compare", str(tmp_path / "out" / "results.json"))
    second.output_dir = str(tmp_path / "out2")
    assert cli.run_eval(second) == 0
    text = (tmp_path / "out2" / "results.md").read_text()
    assert "| out | " in text and "(+0.0)" in text  # the compare run is labelled by its folder


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--benchmarks", "frames", "--data-dir", "/nonexistent"], "frames: data file not found"),
        (["--benchmarks", "triviaqa"], "unknown benchmark 'triviaqa'"),
        (["--benchmarks", "jsonl:/nonexistent/w.jsonl"], "/nonexistent/w.jsonl: file not found"),
        (["--benchmarks", "frames", "--n", "0"], "--n 0: must be >= 1"),
        (["--benchmarks", "frames", "--judge-url", "http://127.0.0.1:9"], "--judge-url and --judge-model"),
        (["--benchmarks", "frames", "--compare", "/nonexistent/results.json"], "--compare"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, scripted, caplog, extra, expected):
    args = _args(tmp_path, *extra)
    with caplog.at_level(logging.ERROR):
        assert cli.run_eval(args) == 2
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(messages) == 1 and expected in messages[0] and "\n" not in messages[0]
    assert scripted == []  # failed before any model was loaded


def test_malformed_native_file_exits_2_naming_file_and_line(tmp_path, scripted, caplog):
    data = tmp_path / "data"
    (data / "longbench").mkdir(parents=True)
    (data / "longbench" / "hotpotqa.jsonl").write_text('{"input": "q", "context": "c", "_id": "1"}\n')
    args = _args(tmp_path, "--benchmarks", "hotpotqa", "--data-dir", str(data))
    with caplog.at_level(logging.ERROR):
        assert cli.run_eval(args) == 2
    assert "hotpotqa.jsonl:line 1: field 'answers'" in caplog.text


def test_missing_model_folder_exits_2(tmp_path, scripted, caplog):
    args = _args(tmp_path, "--benchmarks", "longbench_v2")
    args.model = str(tmp_path / "no-such-model")
    with caplog.at_level(logging.ERROR):
        assert cli.run_eval(args) == 2
    assert "no config.json" in caplog.text


def test_unset_judge_key_variable_exits_2(tmp_path, scripted, caplog, monkeypatch):
    monkeypatch.delenv("EVAL_TEST_KEY", raising=False)
    judge = ["--judge-url", "http://127.0.0.1:9/v1", "--judge-model", "j", "--judge-api-key-env", "EVAL_TEST_KEY"]
    with caplog.at_level(logging.ERROR):
        assert cli.run_eval(_args(tmp_path, "--benchmarks", "longbench_v2", *judge)) == 2
    assert "EVAL_TEST_KEY" in caplog.text


def test_importing_the_eval_cli_loads_no_torch_or_matplotlib():
    # `spell eval --help` and fully resumed runs never need torch; matplotlib is imported only to plot.
    heavy = "('torch', 'transformers', 'matplotlib')"
    probe = f"import sys, spell.evaluate.cli; print([m for m in {heavy} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


class _YesHandler(BaseHTTPRequestHandler):
    hits = 0

    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:
        type(self).hits += 1
        self.rfile.read(int(self.headers["Content-Length"]))
        body = json.dumps({"choices": [{"message": {"content": "Same fact. [[YES]]"}}]}).encode()
        self.send_response(200)
        self.end_headers()
        self.wfile.write(body)


def test_run_eval_with_judge_lifts_qa_scores_and_caches(tmp_path, scripted):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _YesHandler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        args = _args(tmp_path, "--benchmarks", f"jsonl:{ASSETS / 'generic.jsonl'}", "--judge-url", url)
        args.judge_model = "fake-judge"
        assert cli.run_eval(args) == 0
        # QA: prediction "B" misses "Valga" by rule, the judge says YES -> 1; DocMath: no number parsed, no
        # judge -> 0; MC: "B" is right by letter -> 1. avg@2 = (1 + 0 + 1) / 3
        results = json.loads((tmp_path / "out" / "results.json").read_text())
        assert results["generic"]["avg@n"] == pytest.approx(2 / 3)
        assert _YesHandler.hits == 1  # 2 identical QA samples -> one request
        assert len((tmp_path / "out" / "judge_cache.jsonl").read_text().splitlines()) == 1
        assert cli.run_eval(args) == 0
        assert _YesHandler.hits == 1  # the re-run is free
    finally:
        server.shutdown()
        server.server_close()
