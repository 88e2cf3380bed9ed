"""``spell eval`` end to end: a tiny real model folder (spell.builtin.tiny) on fixture files of every native format
and of the generic format; outputs exist and parse; a second run with the same output dir generates nothing.

Run: .venv/bin/python -m pytest tests/integration/test_eval_cli.py -q
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import pytest

from spell.evaluate import cli
from spell.evaluate.native import load_benchmark

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "eval"
BENCHMARKS = [
    "longbench_v2",
    "hotpotqa",
    "2wikimqa",
    "musique",
    "frames",
    "docmath",
    f"jsonl:{ASSETS / 'generic.jsonl'}",
]


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    from spell.builtin.tiny import build_tiny_model, build_tiny_tokenizer, save_policy

    texts = []
    for spec in BENCHMARKS:
        for item in load_benchmark(spec, ASSETS):
            texts.extend([*item.documents, item.question, *item.answers])
    tokenizer = build_tiny_tokenizer(texts, vocab_size=512)
    model = build_tiny_model(tokenizer, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, seed=0)
    return save_policy(model, tokenizer, tmp_path_factory.mktemp("tiny") / "policy")


def _args(model: Path, output_dir: Path, *extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_eval_arguments(parser)
    return parser.parse_args(
        [
            "--model", str(model),
            "--benchmarks", ",".join(BENCHMARKS),
            "--data-dir", str(ASSETS),
            "--output-dir", str(output_dir),
            "--n", "2",
            "--max-new-tokens", "8",
            "--limit", "2",
            "--max-input-tokens", "256",
            "--device", "cpu",
            *extra,
        ]
    )  # fmt: skip


def test_spell_eval_end_to_end_and_resume(tiny_model_dir, tmp_path, caplog):
    out = tmp_path / "eval"
    assert cli.run_eval(_args(tiny_model_dir, out)) == 0

    lines = (out / "generations.jsonl").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 7 * 2 * 2  # 7 benchmarks x 2 questions (--limit) x 2 samples (--n)
    for record in records:
        assert {"benchmark", "id", "sample_index", "response", "prediction", "rule_score", "judge", "score"} <= set(
            record
        )
        assert record["score"] in (0.0, 1.0) and record["response_tokens"] <= 8
    assert any(r["truncated"] for r in records)  # some templated prompts exceed 256 tokens: middle-truncated

    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    names = {"longbench_v2", "hotpotqa", "2wikimqa", "musique", "frames", "docmath", "generic"}
    assert set(results) == names | {"average"}
    for name in names:
        assert results[name]["n"] == 2 and results[name]["num_questions"] == 2
        assert {"avg@n", "pass@1", "pass@2"} <= set(results[name]) and "pass@4" not in results[name]
    assert results["average"]["complete"] and set(results["average"]["columns"]) == {
        "DocMath", "Frames", "LB-MQA", "LB-V2"
    }  # fmt: skip
    assert (out / "results.md").read_text(encoding="utf-8").startswith("# Evaluation: policy")
    assert (out / "passk.png").read_bytes()[:4] == b"\x89PNG"

    with caplog.at_level(logging.INFO, logger="spell.evaluate"):
        assert cli.run_eval(_args(tiny_model_dir, out)) == 0
    assert "nothing to generate" in caplog.text
    assert (out / "generations.jsonl").read_text(encoding="utf-8").splitlines() == lines


def test_spell_eval_missing_data_dir_exits_2(tiny_model_dir, tmp_path, caplog):
    args = _args(tiny_model_dir, tmp_path / "eval")
    args.data_dir = str(tmp_path / "nowhere")
    with caplog.at_level(logging.ERROR):
        assert cli.run_eval(args) == 2
    assert "longbench_v2: data file not found" in caplog.text
    assert not (tmp_path / "eval" / "generations.jsonl").exists()


def test_a_training_checkpoint_is_exported_once_then_evaluated(tiny_model_dir, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from spell.rl.checkpoint import save_checkpoint

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        model.lm_head.weight.add_(0.01)  # a "trained" policy that differs from the base folder
    from transformers import AutoTokenizer

    ckpt = save_checkpoint(tmp_path / "run", 3, model, AutoTokenizer.from_pretrained(tiny_model_dir), None, None,
                           {"step": 3}, keep_last=1)
    out = tmp_path / "eval"
    path = cli.resolve_model_path(tmp_path / "run", out)  # a run folder: its latest checkpoint, exported
    assert path == out / "model_run_step_000003" and (path / "model.safetensors").is_file()
    exported = AutoModelForCausalLM.from_pretrained(path)
    assert torch.equal(exported.lm_head.weight, model.lm_head.weight)
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    assert cli.resolve_model_path(ckpt, out) == path and (path / "model.safetensors").stat().st_mtime_ns == stamp
    assert cli.run_eval(_args(tmp_path / "run", out, "--limit", "1")) == 0  # reuses the export
