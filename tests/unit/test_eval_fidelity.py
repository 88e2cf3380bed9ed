"""Evaluation fidelity (issue 13): ``model.rope_scaling`` / ``spell eval --rope-scaling yarn:F`` (HF and vLLM),
the model's attendable positions, greedy ``--temperature 0``, the refusal of prompts the model cannot attend, and
the progress bar.

Run: .venv/bin/python -m pytest tests/unit/test_eval_fidelity.py -q
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path

import pytest

from spell.config import ConfigError, ModelConfig, load_config
from spell.config.run import attention_limit, parse_rope_scaling, rope_scaling_fields
from spell.evaluate import cli
from spell.evaluate.formats import EvalItem
from spell.evaluate.runner import EvalProgress, PromptTooLongError, check_prompt_fits, generate_missing
from spell.types import Completion, SamplingParams, TaskType

ASSETS = Path(__file__).resolve().parents[1] / "assets"
QWEN = json.loads((ASSETS / "qwen2.5-7b-instruct" / "config.json").read_text())


# ---- rope scaling: config and arithmetic ----------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [("yarn:4", ("yarn", 4.0)), ("yarn:2.5", ("yarn", 2.5))])
def test_parse_rope_scaling(text, expected):
    assert parse_rope_scaling(text) == expected


@pytest.mark.parametrize("text", ["yarn", "yarn:1", "yarn:0.5", "yarn:x", "linear:4", "yarn:inf", ""])
def test_bad_rope_scaling_is_a_config_error_naming_the_key(text):
    with pytest.raises(ConfigError, match="model.rope_scaling"):
        ModelConfig(rope_scaling=text)
    assert load_config(None, ["model.rope_scaling=yarn:4"]).model.rope_scaling == "yarn:4"


def test_yarn_fields_for_qwen25_7b():
    # Qwen2.5's recipe for 100K: YaRN, factor 4 over its 32,768 trained positions = 131,072
    assert rope_scaling_fields(QWEN, "yarn:4") == {
        "rope_scaling": {"rope_type": "yarn", "type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768,
                         "rope_theta": 1000000.0},
        "max_position_embeddings": 131072,
    }
    assert attention_limit(QWEN) == 32768 and attention_limit(QWEN, "yarn:4") == 131072
    declared = {**QWEN, "rope_scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}}
    assert attention_limit(declared) == 131072  # YaRN already in config.json (Qwen's README way)
    assert attention_limit(declared, "yarn:2") == 65536  # the original positions, not the declared 32,768 x 4
    with pytest.raises(ValueError, match="already uses linear"):
        rope_scaling_fields({**QWEN, "rope_scaling": {"type": "linear", "factor": 2.0}}, "yarn:4")


def test_load_policy_applies_yarn_as_installed_transformers_expects(tiny_policy_dir):
    import torch

    from spell.rl.policy import load_policy

    plain, _ = load_policy(ModelConfig(path=str(tiny_policy_dir)), torch.device("cpu"))
    scaled, _ = load_policy(ModelConfig(path=str(tiny_policy_dir), rope_scaling="yarn:4"), torch.device("cpu"))
    rope = getattr(scaled.config, "rope_parameters", None) or scaled.config.rope_scaling
    assert rope["rope_type"] == "yarn" and rope["factor"] == 4.0
    assert rope["original_max_position_embeddings"] == 4096 and scaled.config.max_position_embeddings == 16384
    # YaRN's attention factor: 0.1 x ln(4) + 1 = 1.13863
    assert scaled.model.rotary_emb.attention_scaling == pytest.approx(0.1 * math.log(4) + 1)
    assert plain.model.rotary_emb.attention_scaling == 1.0
    ids = torch.tensor([[5, 9, 12, 7, 30, 41]])
    with torch.no_grad():
        assert not torch.allclose(plain(ids).logits, scaled(ids).logits)  # the same weights, other positions
    for name, tensor in plain.state_dict().items():
        assert torch.equal(tensor, scaled.state_dict()[name])


def test_rope_scaled_folder_declares_yarn_and_links_the_weights(tiny_policy_dir, tmp_path):
    from transformers import AutoConfig

    folder = cli.rope_scaled_folder(Path(tiny_policy_dir), "yarn:2", tmp_path)
    config = AutoConfig.from_pretrained(folder)
    rope = getattr(config, "rope_parameters", None) or config.rope_scaling
    assert rope["rope_type"] == "yarn" and rope["factor"] == 2.0 and config.max_position_embeddings == 8192
    assert (folder / "model.safetensors").is_symlink()
    assert cli.rope_scaled_folder(Path(tiny_policy_dir), "yarn:2", tmp_path) == folder  # reused


def test_vllm_eval_gets_the_scaled_folder_and_a_max_model_len_within_the_limit(tiny_policy_dir, tmp_path,
                                                                               monkeypatch):
    import spell.rl.engine.vllm as vllm_engine

    built = {}

    class RecordingVLLMEngine:  # stands in for vLLM, which this machine does not have
        def __init__(self, model, tokenizer, **kwargs):
            built.update(kwargs, folder=model.name_or_path)

    monkeypatch.setattr(vllm_engine, "VLLMEngine", RecordingVLLMEngine)
    args = _args(tiny_policy_dir, tmp_path, "--engine", "vllm", "--rope-scaling", "yarn:2", "--max-input-tokens",
                 "16000", "--max-new-tokens", "512")
    cli._engine_factory(args, Path(tiny_policy_dir))()
    assert built["max_model_len"] == 8192  # min(16,000 + 512, 4,096 x 2)
    assert json.loads((Path(built["folder"]) / "config.json").read_text())["rope_scaling"]["factor"] == 2.0


# ---- spell eval: greedy, limits, progress ---------------------------------------------------------------------


def _args(model: Path, output_dir: Path, *extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_eval_arguments(parser)
    return parser.parse_args(["--model", str(model), "--benchmarks", f"jsonl:{ASSETS / 'eval' / 'generic.jsonl'}",
                              "--output-dir", str(output_dir), "--n", "4", "--max-new-tokens", "8",
                              "--max-input-tokens", "2048", "--device", "cpu", *extra])


@pytest.fixture(scope="module")
def varied_policy_dir(tmp_path_factory, tiny_tokenizer):
    """A tiny policy whose greedy output varies from token to token (large initial weights)."""
    from spell.builtin.tiny import build_tiny_model, save_policy

    model = build_tiny_model(tiny_tokenizer, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
                             initializer_range=0.5, seed=1)
    return save_policy(model, tiny_tokenizer, tmp_path_factory.mktemp("varied") / "policy")


def test_greedy_eval_equals_the_engines_greedy_output(varied_policy_dir, tmp_path, caplog):
    import torch

    from spell.evaluate.native import load_benchmark
    from spell.evaluate.runner import prepare_prompt
    from spell.rl.engine import HFEngine
    from spell.rl.policy import load_policy

    tiny_policy_dir = varied_policy_dir
    with caplog.at_level(logging.WARNING):
        assert cli.run_eval(_args(tiny_policy_dir, tmp_path / "eval", "--temperature", "0")) == 0
    assert "greedy decoding" in caplog.text  # --n 4 -> 1: four identical samples would be wasted work
    records = [json.loads(line) for line in (tmp_path / "eval" / "generations.jsonl").read_text().splitlines()]
    assert len(records) == 3 and {r["sample_index"] for r in records} == {0}

    model, tokenizer = load_policy(ModelConfig(path=str(tiny_policy_dir)), torch.device("cpu"))
    model.eval()
    engine = HFEngine(model, tokenizer)
    items = load_benchmark(f"jsonl:{ASSETS / 'eval' / 'generic.jsonl'}", None)
    prompts = [prepare_prompt(item, tokenizer, 2048)[0] for item in items]
    greedy = engine.generate(prompts, SamplingParams(temperature=0.0, top_p=0.95, max_new_tokens=8, seed=123))
    assert [r["response"] for r in records] == [group[0].text for group in greedy]
    assert len({token for group in greedy for token in group[0].token_ids}) > 3  # not one repeated token
    assert [r["response_tokens"] for r in records] == [len(group[0].token_ids) for group in greedy]
    with torch.no_grad():  # and the engine's greedy is transformers' greedy
        reference = model.generate(torch.tensor([prompts[0]]), max_new_tokens=8, do_sample=False)
    assert greedy[0][0].token_ids[:8] == tuple(reference[0, len(prompts[0]):].tolist())[: len(greedy[0][0].token_ids)]


def test_negative_temperature_is_still_refused(tiny_policy_dir, tmp_path, caplog):
    assert cli.run_eval(_args(tiny_policy_dir, tmp_path, "--temperature", "-0.5")) == 2
    assert "--temperature must be >= 0 (0 = greedy)" in caplog.text


def _long_item_file(tmp_path: Path, words: int) -> Path:
    path = tmp_path / "long.jsonl"
    text = " ".join(f"Orvan Corp acquired Delta Works in {1900 + i % 100}." for i in range(words // 6))
    path.write_text(json.dumps({"id": "long-1", "task": "doc_general_qa", "documents": [text],
                                "question": "Who bought Delta Works?", "answers": ["Orvan Corp"]}) + "\n")
    return path


def test_prompt_beyond_what_the_model_attends_is_refused_before_loading(tiny_policy_dir, tmp_path, caplog,
                                                                        monkeypatch):
    import spell.rl.policy as policy

    long = _long_item_file(tmp_path, 3000)
    base = ["--benchmarks", f"jsonl:{long}", "--n", "1", "--max-input-tokens", "100000"]

    def no_model(*args, **kwargs):
        raise AssertionError("the model must not load before the prompts are checked")

    monkeypatch.setattr(policy, "load_policy", no_model)
    with caplog.at_level(logging.ERROR):
        assert cli.run_eval(_args(tiny_policy_dir, tmp_path / "a", *base)) == 2
    # the tiny model's config.json: 4,096 positions; 8 new tokens leave 4,088 for the prompt
    line = next(r.getMessage() for r in caplog.records if "positions the model attends" in r.getMessage())
    assert "generic/long-1" not in line and "long/long-1: prompt of" in line
    assert "exceeds the 4,096 positions the model attends. Fix: --max-input-tokens 4088" in line
    assert "\n" not in line and not (tmp_path / "a" / "generations.jsonl").exists()
    monkeypatch.undo()
    # truncation applies: --max-input-tokens within the limit keeps the first and last halves
    assert cli.run_eval(_args(tiny_policy_dir, tmp_path / "b", *base[:-1], "4088")) == 0
    # YaRN x 4 lets the model attend 16,384 positions: the whole prompt fits
    assert cli.run_eval(_args(tiny_policy_dir, tmp_path / "c", *base, "--rope-scaling", "yarn:4")) == 0
    record = json.loads((tmp_path / "c" / "generations.jsonl").read_text())
    assert 4096 < record["prompt_tokens"] <= 16384 - 8 and not record["truncated"]


def test_check_prompt_fits_arithmetic():
    item = EvalItem("bench", "q1", TaskType.DOC_GENERAL_QA, ("doc",), "question?", ("a",))
    check_prompt_fits(item, 131_072 - 4_096, 4_096, 131_072)  # exactly at the limit: fine
    with pytest.raises(PromptTooLongError, match=r"--max-input-tokens 126976"):
        check_prompt_fits(item, 126_977, 4_096, 131_072)  # 131,073 > 32,768 x 4
    check_prompt_fits(item, 10**6, 4_096, None)  # unknown limit: no check


class _CountingEngine:
    """Answers every prompt with the same three tokens (a stand-in for a model, for the progress meter)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def generate(self, prompts, sampling, n=1):
        return [[Completion("abc", (5, 6, 7), tuple(p), "length") for _ in range(n)] for p in prompts]


def test_progress_bar_on_stderr_with_throughput_and_eta(tiny_tokenizer, tmp_path, capsys, caplog):
    from spell.evaluate.native import load_benchmark

    items = load_benchmark(f"jsonl:{ASSETS / 'eval' / 'generic.jsonl'}", None)
    sampling = SamplingParams(0.7, 0.95, 3, 0)
    done = generate_missing(items, lambda: _CountingEngine(tiny_tokenizer), sampling, 2, tmp_path / "g.jsonl",
                            max_input_tokens=512, batch_prompts=2, progress=True)
    assert done == 6  # 3 questions x 2 samples
    err = capsys.readouterr().err
    assert "spell eval" in err and "6/6" in err and "tok/s" in err
    with caplog.at_level(logging.INFO, logger="spell.evaluate.runner"):  # no terminal: one log line per batch
        generate_missing(items, lambda: _CountingEngine(tiny_tokenizer), sampling, 2, tmp_path / "h.jsonl",
                         max_input_tokens=512, batch_prompts=2, progress=False)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("generated ")]
    assert lines[0].startswith("generated 4/6 samples,") and lines[-1].startswith("generated 6/6 samples,")
    assert all("samples/s" in line and "tok/s" in line and "ETA" in line for line in lines)


def test_progress_summary_arithmetic(monkeypatch):
    clock = iter([100.0, 110.0])  # start at 100 s; the summary is taken at 110 s
    monkeypatch.setattr("spell.evaluate.runner.time.monotonic", lambda: next(clock))
    meter = EvalProgress(total=40, enabled=False)
    meter.samples, meter.tokens = 10, 2_000
    # 10 samples in 10 s = 1/s, 200 tok/s; 30 samples left at 1/s = 30 s
    assert meter.summary() == "1.00 samples/s, 200 tok/s, ETA 0:00:30"


def test_two_models_of_one_folder_name_never_share_a_scaled_folder(tiny_policy_dir, tmp_path):
    import shutil

    from spell.evaluate import cli

    first, second = tmp_path / "a" / "policy", tmp_path / "b" / "policy"  # same name, other weights
    shutil.copytree(tiny_policy_dir, first)
    shutil.copytree(tiny_policy_dir, second)
    out = tmp_path / "eval"
    one, two = cli.rope_scaled_folder(first, "yarn:2", out), cli.rope_scaled_folder(second, "yarn:2", out)
    assert one != two
    assert (one / "model.safetensors").resolve() == (first / "model.safetensors").resolve()
    assert (two / "model.safetensors").resolve() == (second / "model.safetensors").resolve()
