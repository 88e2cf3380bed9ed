"""Generation, scoring and resume with a scripted engine: exact metrics, middle truncation, judge routing.

Run: .venv/bin/python -m pytest tests/unit/test_eval_runner.py -q
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from spell.evaluate.formats import EvalItem, load_generic
from spell.evaluate.metrics import summarize
from spell.evaluate.runner import (
    apply_judge,
    generate_missing,
    load_generations,
    prepare_prompt,
    select_records,
    truncate_middle,
)
from spell.types import Completion, SamplingParams, TaskType, Verdict

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "eval"


class CharTokenizer:
    """One token per character, no chat template (encode_chat_prompt then tokenises the plain text)."""

    chat_template = None

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict:
        return {"input_ids": [ord(ch) for ch in text]}

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(chr(i) for i in ids)


class ScriptedEngine:
    """Engine protocol fake: answers each prompt with the scripted texts of the first key found in it."""

    def __init__(self, script: dict[str, list[str]]) -> None:
        self.tokenizer = CharTokenizer()
        self.script = script
        self.calls = 0
        self.samples = 0
        self.seeds: list[int | None] = []
        self.prompts: list[str] = []

    def generate(self, prompts, sampling: SamplingParams, n: int = 1) -> list[list[Completion]]:
        self.calls += 1
        self.seeds.append(sampling.seed)
        out = []
        for ids in prompts:
            text = self.tokenizer.decode(ids)
            self.prompts.append(text)
            texts = next(v for k, v in self.script.items() if k in text)
            out.append([Completion(texts[i % len(texts)], (7,) * 3, tuple(ids)) for i in range(n)])
            self.samples += n
        return out

    def sync_weights(self, model) -> None:
        pass


# The generic fixture: world-0001 QA (gold Valga), world-0002 DocMath (42), world-0003 MC (B).
SCRIPT = {
    "observatory founded by Mira Lind": [
        "The correct answer is Valga.",  # cover EM hit
        "The correct answer is Tartu.",  # miss (the judge may rescue it)
        "The correct answer is Valga town.",  # gold is a substring -> hit
        "I cannot tell.",  # no parsed answer
    ],
    "telescopes cost together": [
        "Therefore, the answer is 42.",
        "Therefore, the answer is 42.0",  # same number
        "Therefore, the answer is 41.",  # wrong
        "Therefore, the answer is 42.",
    ],
    "Which country borders Valga": [
        "The correct answer is B.",
        "The correct answer is (A).",
        "The correct answer is A.",
        "The correct answer is D.",
    ],
}


def _items() -> list[EvalItem]:
    return load_generic(ASSETS / "generic.jsonl")


def _run(tmp_path: Path, engine: ScriptedEngine, n: int = 4, items=None, built: list | None = None) -> int:
    def factory():
        if built is not None:
            built.append(1)
        return engine

    sampling = SamplingParams(0.7, 0.95, 16, 42)
    return generate_missing(
        items or _items(), factory, sampling, n, tmp_path / "generations.jsonl", max_input_tokens=100_000
    )


def test_truncate_middle_keeps_first_and_last_half():
    ids = list(range(100))
    assert truncate_middle(ids, 10) == [0, 1, 2, 3, 4, 95, 96, 97, 98, 99]  # 5 head + 5 tail
    assert truncate_middle(ids, 7) == [0, 1, 2, 96, 97, 98, 99]  # odd: 3 head + 4 tail
    assert truncate_middle(ids, 100) == ids and truncate_middle(ids, None) == ids


def test_prepare_prompt_truncates_the_templated_prompt_keeping_head_and_tail():
    long_doc = "START-OF-DOC " + "filler " * 2000 + " END-OF-DOC"
    item = EvalItem("x", "1", TaskType.DOC_GENERAL_QA, (long_doc,), "Who wrote it?", ("Ann",))
    tokenizer = CharTokenizer()
    ids, full = prepare_prompt(item, tokenizer, 400, None)
    text = tokenizer.decode(ids)
    assert full > 14_000 and len(ids) == 400  # one token per character
    assert "START-OF-DOC" in text  # head: template opening + start of the document
    assert "Who wrote it?" in text and "The correct answer is" in text  # tail: question + answer format
    assert "END-OF-DOC" not in text or text.index("END-OF-DOC") > 200  # the middle is what is cut
    assert ids[:200] == [ord(c) for c in text[:200]]


def test_scripted_run_gives_exact_metrics(tmp_path):
    engine = ScriptedEngine(SCRIPT)
    assert _run(tmp_path, engine) == 12  # 3 questions x 4 samples
    records = load_generations(tmp_path / "generations.jsonl")
    apply_judge(records, _items(), None)
    results = summarize(records)["generic"]
    # c = 2 (QA), 3 (DocMath), 1 (MC) of n = 4
    assert results["avg@n"] == pytest.approx((2 / 4 + 3 / 4 + 1 / 4) / 3)  # 0.5
    # pass@2: QA 1 - C(2,2)/C(4,2) = 5/6; DocMath 1 - C(1,2)/C(4,2) = 1; MC 1 - C(3,2)/C(4,2) = 1/2
    assert results["pass@2"] == pytest.approx((5 / 6 + 1 + 1 / 2) / 3)  # 0.777778
    assert results["pass@4"] == 1.0 and "pass@8" not in results
    # buckets: world-0001 and world-0003 are "short"; world-0002 has none -> prompt-token bucket "<8k"
    assert results["buckets"]["short"]["avg@n"] == pytest.approx((2 / 4 + 1 / 4) / 2)
    assert results["buckets"]["<8k"]["avg@n"] == pytest.approx(3 / 4)


def test_generation_records_have_the_documented_keys(tmp_path):
    _run(tmp_path, ScriptedEngine(SCRIPT))
    record = load_generations(tmp_path / "generations.jsonl")[1]
    expected = {"benchmark", "id", "sample_index", "response", "prediction", "rule_score", "judge", "score"}
    assert expected <= set(record)
    assert (record["id"], record["sample_index"], record["prediction"]) == ("world-0001", 1, "Tartu")
    assert record["rule_score"] == 0.0 and record["judge"] is None and record["truncated"] is False


def test_second_run_generates_nothing_and_never_builds_the_engine(tmp_path):
    first = ScriptedEngine(SCRIPT)
    _run(tmp_path, first)
    lines_before = (tmp_path / "generations.jsonl").read_text()
    second, built = ScriptedEngine(SCRIPT), []
    assert _run(tmp_path, second, built=built) == 0
    assert second.calls == 0 and built == []  # no model load, no generation
    assert (tmp_path / "generations.jsonl").read_text() == lines_before


def test_interrupted_run_only_generates_the_missing_questions(tmp_path):
    items = _items()
    _run(tmp_path, ScriptedEngine(SCRIPT), items=items[:1])  # "crash" after the first question
    engine = ScriptedEngine(SCRIPT)
    assert _run(tmp_path, engine, items=items) == 8  # the 2 other questions x 4
    records = load_generations(tmp_path / "generations.jsonl")
    assert sorted((r["id"], r["sample_index"]) for r in records) == [
        (f"world-000{q}", i) for q in (1, 2, 3) for i in range(4)
    ]


def test_raising_n_adds_only_the_extra_samples(tmp_path):
    _run(tmp_path, ScriptedEngine(SCRIPT), n=2)
    engine = ScriptedEngine(SCRIPT)
    assert _run(tmp_path, engine, n=4) == 6  # 2 more for each of 3 questions
    indices = sorted(r["sample_index"] for r in load_generations(tmp_path / "generations.jsonl"))
    assert indices == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert engine.seeds == [42 + 2]  # seed + samples already there, so the new samples differ from the old


def test_torn_last_line_is_dropped_and_regenerated(tmp_path):
    _run(tmp_path, ScriptedEngine(SCRIPT))
    path = tmp_path / "generations.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:20])  # crash mid-line in the last question
    assert len(load_generations(path)) == 11
    assert json.loads(path.read_text().splitlines()[-1])  # the file was rewritten as valid JSONL
    assert _run(tmp_path, ScriptedEngine(SCRIPT)) == 1  # only the lost sample


def test_smaller_n_or_limit_selects_a_subset_of_records(tmp_path):
    _run(tmp_path, ScriptedEngine(SCRIPT))
    records = load_generations(tmp_path / "generations.jsonl")
    assert len(select_records(records, _items()[:2], n=2)) == 4  # 2 questions x 2 samples


class StubJudge:
    """Says YES to the prediction "Tartu" and NO to everything else; records what it was asked."""

    def __init__(self) -> None:
        self.asked = []

    def judge(self, requests):
        self.asked.extend(requests)
        return [Verdict.YES if r.prediction == "Tartu" else Verdict.NO for r in requests]


def test_judge_is_asked_only_for_rule_misses_with_a_prediction_and_never_for_mc(tmp_path):
    _run(tmp_path, ScriptedEngine(SCRIPT))
    records = load_generations(tmp_path / "generations.jsonl")
    judge = StubJudge()
    assert apply_judge(records, _items(), judge) == 2
    # asked: QA "Tartu" (rule 0) and DocMath "41" (rule 0); not "I cannot tell." (no prediction), not MC
    assert sorted(r.prediction.rstrip(".") for r in judge.asked) == ["41", "Tartu"]
    assert judge.asked[0].gold in ("Valga", "42") and "Valga" in {r.gold for r in judge.asked}
    qa = [r for r in records if r["id"] == "world-0001"]
    assert [r["score"] for r in qa] == [1.0, 1.0, 1.0, 0.0]  # max(rule, judge): Tartu rescued by the judge
    assert [r["judge"] for r in qa] == [None, "yes", None, None]
    results = summarize(records)["generic"]
    assert results["avg@n"] == pytest.approx((3 / 4 + 3 / 4 + 1 / 4) / 3)


def test_judge_verdicts_are_reused_on_rerun(tmp_path):
    _run(tmp_path, ScriptedEngine(SCRIPT))
    records = load_generations(tmp_path / "generations.jsonl")
    apply_judge(records, _items(), StubJudge())
    again = StubJudge()
    assert apply_judge(records, _items(), again) == 0 and again.asked == []


def test_without_judge_the_score_is_the_rule_score_even_if_an_old_verdict_exists(tmp_path):
    _run(tmp_path, ScriptedEngine(SCRIPT))
    records = load_generations(tmp_path / "generations.jsonl")
    apply_judge(records, _items(), StubJudge())
    apply_judge(records, _items(), None)
    assert [r["score"] for r in records if r["id"] == "world-0001"] == [1.0, 0.0, 1.0, 0.0]
