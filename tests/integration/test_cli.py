"""The `spell` command line: validate, print-config, clear errors, and a real train + resume on a tiny model."""

from __future__ import annotations

import json

import pytest

from spell.cli import main

QA_ROW = {"id": "s1", "documents": ["Orvan Corp acquired Delta Works.", "Mira Tessel runs Delta Works."]}


@pytest.fixture()
def corpus(tmp_path):
    path = tmp_path / "docsets.jsonl"
    rows = [dict(QA_ROW, id=f"s{i}", task=task) for i, task in
            enumerate(["doc_general_qa", "docmath_qa", "doc_mc"] * 2)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_validate_renders_one_prompt_per_role_and_task(corpus, tiny_policy_dir, capsys):
    code = main(["validate", "--config", "tiny_cpu", f"model.path={tiny_policy_dir}",
                 f"data.train_files=[{corpus}]"])
    out = capsys.readouterr().out
    assert code == 0
    for role in ("questioner", "responder", "verifier"):
        for task in ("docmath_qa", "doc_general_qa", "doc_mc"):
            assert f"{role} / {task}" in out


def test_print_config_shows_overrides(capsys):
    assert main(["print-config", "--config", "tiny_cpu", "responder.group_size=3"]) == 0
    assert "group_size: 3" in capsys.readouterr().out


@pytest.mark.parametrize("args, needle", [
    (["print-config", "train.nonsense=1"], "train.nonsense"),
    (["print-config", "responder.group_size=1"], "responder.group_size"),
    (["print-config", "--config", "no_such_preset"], "presets"),
])
def test_bad_config_is_one_clear_line_and_exit_2(args, needle, caplog):
    assert main(args) == 2
    assert needle in caplog.text


def test_bad_corpus_names_file_and_line_before_loading_a_model(tmp_path, caplog):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(QA_ROW) + "\n" + '{"id": "x", "documents": []}\n')
    code = main(["train", "--config", "tiny_cpu", "model.path=/nonexistent/model", f"data.train_files=[{bad}]"])
    assert code == 2
    assert f"{bad}:2" in caplog.text  # the corpus is checked before the (missing) model


def test_missing_model_folder_is_reported_with_the_fix(corpus, caplog):
    code = main(["train", "--config", "tiny_cpu", "model.path=/nonexistent/model", f"data.train_files=[{corpus}]"])
    assert code == 2 and "/nonexistent/model" in caplog.text


def test_train_then_resume_with_the_hf_engine(corpus, tiny_policy_dir, tmp_path):
    out = tmp_path / "run"
    common = [f"model.path={tiny_policy_dir}", f"data.train_files=[{corpus}]", f"output_dir={out}",
              "data.questions_per_round=3", "train.max_rounds=1"]
    assert main(["train", "--config", "tiny_cpu", *common, "train.max_steps=1"]) == 0
    assert (out / "checkpoints" / "step_000001" / "COMPLETE").exists()
    assert main(["train", "--resume", str(out), "train.max_steps=2"]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    # a random tiny policy writes no parseable question: every sample is a bad case, and that is data
    assert rows[0]["questioner/num_generated"] == 3
    assert (out / "samples" / "step_000002.jsonl").exists() and (out / "curves.png").exists()
