"""`spell data build` end to end: raw .txt files -> document sets -> `spell validate` accepts them; bad input is
one line naming file:line, exit 2, and nothing written."""

from __future__ import annotations

import json
import random

from spell.cli import main

WORDS = {
    "river": "river bank flood bridge delta stream current water boat mill ferry".split(),
    "music": "violin choir opera tempo chord melody rhythm concert score piano organ".split(),
}


def _write_documents(folder):
    for topic, vocabulary in WORDS.items():
        for number in range(9):
            rng = random.Random(f"{topic}{number}")
            text = " ".join(rng.choice(vocabulary) + rng.choice(("", "s", "ed", "ing")) for _ in range(50))
            path = folder / topic / f"{number}.md"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"# {topic} {number}\n\n{text}.\n")


def test_data_build_then_validate(tmp_path, caplog, capsys):
    _write_documents(tmp_path / "raw")
    out = tmp_path / "mine"
    assert main(["data", "build", str(tmp_path / "raw"), "--out", str(out), "--set-size", "6",
                 "--min-set-size", "3", "--seed", "3"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["inputs"] == {"files": 18, "documents": 18}
    assert "check it, then train: spell validate --config CONFIG data.train_files=" in caplog.text
    # the overrides the build prints: its parquet file and, with no docmath sets, the two general tasks
    assert main(["validate", "--config", "tiny_cpu", *report["train_overrides"].split()]) == 0
    assert f"'num_docsets': {report['sets']['count']}" in capsys.readouterr().out


def test_unreadable_input_is_one_line_exit_2_and_nothing_written(tmp_path, caplog):
    _write_documents(tmp_path / "raw")
    (tmp_path / "raw" / "music" / "9.txt").write_bytes(b"ok\n\x80\n")
    out = tmp_path / "mine"
    assert main(["data", "build", str(tmp_path / "raw"), "--out", str(out)]) == 2
    bad = tmp_path / "raw" / "music" / "9.txt"
    assert f"{bad}:2: not UTF-8 (byte 0x80 at byte 1 of the line). Fix:" in caplog.text
    assert "Traceback" not in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]
