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


# ---- every input error: one line with the fix, exit 2, and no model loaded (issue 10) ----


@pytest.fixture()
def no_model(monkeypatch):
    """Fail the test if anything loads a model: the input errors below must be found before that."""
    import spell.trainer

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the input error was reported")

    monkeypatch.setattr(spell.trainer, "load_policy", refuse)


def _train(tmp_path, *args):
    return main(["train", "--config", "tiny_cpu", "model.path=/nonexistent/model", f"output_dir={tmp_path / 'run'}",
                 *args])


@pytest.mark.parametrize("override, expected", [
    ("grpo.lr=nan", "grpo.lr=nan: must be a finite number"),  # crashed after the model loaded
    ("grpo.lr=inf", "grpo.lr=inf: must be a finite number"),  # saved a checkpoint of NaN weights
    ("sampling.temperature=nan", "sampling.temperature=nan: must be a finite number"),
    ("responder.max_new_tokens=0", "responder.max_new_tokens=0: must be >= 1"),  # ran
    ("responder.max_new_tokens=-5", "responder.max_new_tokens=-5: must be >= 1"),
    ("train.max_steps", "command-line overrides: override 'train.max_steps' is not key=value. Fix"),
])
def test_bad_value_is_one_line_exit_2_before_a_model(corpus, tmp_path, caplog, no_model, override, expected):
    assert _train(tmp_path, f"data.train_files=[{corpus}]", override) == 2
    assert expected in caplog.text and "Traceback" not in caplog.text


def test_malformed_yaml_is_one_line_with_its_position(tmp_path, caplog, no_model):
    path = tmp_path / "mine.yaml"
    path.write_text("grpo:\n  lr: 1.0e-5\ntrain: max_steps: 3\n")  # an unquoted ': ' inside a value
    assert main(["train", "--config", str(path), "model.path=/nonexistent/model"]) == 2
    assert f"{path}:3:17: invalid YAML (mapping values are not allowed in this context). Fix" in caplog.text


def test_non_utf8_corpus_is_one_report_with_file_line_and_byte(tmp_path, caplog, no_model):
    bad = tmp_path / "latin1.jsonl"
    bad.write_bytes(json.dumps(QA_ROW).encode() + b"\n" + b'{"id": "s2", "documents": ["caf\xe9"]}\n')
    assert _train(tmp_path, f"data.train_files=[{bad}]") == 2  # was a UnicodeDecodeError traceback, exit 1
    # '{"id": "s2", "documents": ["caf' is 31 bytes, so 0xe9 is byte 32 of line 2
    assert f"{bad}:2: not UTF-8 (byte 0xe9 at byte 32 of the line). Fix" in caplog.text


def test_corpus_of_only_too_long_docsets_fails_before_a_model(tmp_path, caplog, no_model):
    path = tmp_path / "huge.jsonl"
    path.write_text(json.dumps({"id": "h", "documents": ["word " * 4000]}) + "\n")  # 20,000 characters
    # tiny_cpu: max_prompt_tokens 2048, so the derived limit is 8 x 2048 = 16,384 characters
    assert _train(tmp_path, f"data.train_files=[{path}]") == 2
    assert "skipped 1 document set(s) longer than 16384 characters" in caplog.text
    assert "no usable document set in data.train_files" in caplog.text


def test_validate_warns_with_the_count_of_too_long_docsets(corpus, tiny_policy_dir, tmp_path, caplog, capsys):
    rows = corpus.read_text() + json.dumps({"id": "big", "documents": ["x" * 300, "y" * 300]}) + "\n"
    path = tmp_path / "with_big.jsonl"
    path.write_text(rows)
    code = main(["validate", "--config", "tiny_cpu", f"model.path={tiny_policy_dir}", f"data.train_files=[{path}]",
                 "data.max_docset_chars=500"])
    out = " ".join(capsys.readouterr().out.split())  # rich wraps long lines
    assert code == 0
    assert "warning 1 document set(s) skipped: longer than 500 characters (data.max_docset_chars)" in out
    assert "'skipped_too_long': 1" in out
    assert ("skipped 1 document set(s) longer than 500 characters in total, which cannot fit a prompt "
            f"(e.g. {path}:7 id 'big': 600 characters)") in caplog.text
