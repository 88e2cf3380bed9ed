"""spell/corpus/build.py: the whole build on hand-made corpora: counts, bounds, determinism, atomic output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from corpus_texts import topic_text, write_folder

from spell.corpus import BuildOptions, DataBuildError
from spell.corpus.build import build_docsets
from spell.data import validate_corpus

GENERAL = ["doc_general_qa", "doc_mc"]


def _options(inputs: list[Path], out: Path, **overrides) -> BuildOptions:
    settings = {"set_size": 8, "min_set_size": 3, "id_prefix": "docs", **overrides}
    return BuildOptions(inputs=tuple(map(str, inputs)), out=str(out), **settings)


def _excerpt_of(eval_path: Path, start: int, num_words: int) -> str:
    context = json.loads(eval_path.read_text())["documents"][0]
    return " ".join(context.split()[start:start + num_words])


@pytest.fixture()
def planted_folder(three_topic_folder, eval_file) -> Path:
    """30 distinct documents + one 200-word document, and planted copies (see the test for the arithmetic)."""
    base = topic_text("cook", 50, num_words=200)
    base_words = base.split()
    write_folder(three_topic_folder, {
        "long/base.txt": base,
        # the same words as astro/00.txt, other case and spacing
        "planted/exact.txt": "  " + topic_text("astro", 0).upper().replace(" ", "   "),
        # one word of 200 changed: Jaccard 191 / 201 = 0.95 >= 0.8
        "planted/near.txt": " ".join(base_words[:100] + ["changed"] + base_words[101:]),
        "planted/eval_copy.txt": json.loads(eval_file.read_text())["documents"][0],
        # 60 words of the 300-word benchmark context inside other text: a verbatim run >= 50 words
        "planted/eval_excerpt.txt": topic_text("astro", 77) + " " + _excerpt_of(eval_file, 100, 60),
        "planted/short.txt": "Too short to be a training document.",
    })
    return three_topic_folder


def test_planted_duplicates_and_contamination_are_removed_and_counted(planted_folder, eval_file, tmp_path):
    out = tmp_path / "corpus"
    report = build_docsets(_options([planted_folder], out, exclude=(str(eval_file),)))
    # read 30 + 1 + 5 planted = 36; length -1 (short) = 35; exact -1 = 34; contamination -2 (copy, excerpt) = 32;
    # near-duplicate -1 = 31; token budget (15,360) -0 = 31
    stages = {s["stage"]: (s["in"], s["out"], s["removed"]) for s in report["stages"]}
    assert stages["read"] == (36, 36, {})
    assert stages["length"] == (36, 35, {"too_short": 1})
    assert stages["exact_dedup"] == (35, 34, {"exact_duplicate": 1})
    assert stages["decontamination"] == (34, 32, {"near_duplicate": 1, "verbatim_span": 1})
    assert stages["near_dedup"] == (32, 31, {"near_duplicate": 1})
    assert stages["token_budget"] == (31, 31, {})
    assert report["decontamination"]["benchmarks"] == {"bench": {"documents": 1, "removed": 2}}
    assert report["examples"]["exact_dedup/exact_duplicate"] == [
        {"removed": str(planted_folder / "planted/exact.txt"), "copy of": str(planted_folder / "astro/00.txt")}]
    assert report["examples"]["near_dedup/near_duplicate"][0]["copy of"] == str(planted_folder / "long/base.txt")
    assert report["examples"]["decontamination/verbatim_span"] == [
        {"removed": str(planted_folder / "planted/eval_excerpt.txt"), "benchmark": "bench"}]
    kept = stages["clustering"][1]
    summary = validate_corpus([out / "docsets.jsonl"], GENERAL)
    assert summary["num_docsets"] == report["sets"]["count"]
    assert sum(summary["per_task"].values()) == report["sets"]["count"]
    rows = [json.loads(line) for line in (out / "docsets.jsonl").read_text().splitlines()]
    origins = [origin for row in rows for origin in row["origins"]]
    assert len(origins) == kept == 31 - report["clustering"]["dropped_documents"]
    assert not any(origin.startswith(str(planted_folder / "planted")) for origin in origins)
    assert sorted(p.name for p in out.iterdir()) == ["cluster_sizes.png", "docsets.jsonl", "docsets.parquet",
                                                     "report.json", "report.md", "set_tokens.png"]
    assert "| decontamination | 34 | 32 | near_duplicate 1, verbatim_span 1 |" in (out / "report.md").read_text()


def test_sets_respect_the_bounds_and_the_same_seed_gives_the_same_bytes(three_topic_folder, tmp_path):
    # 30 documents of 60 words (~113 estimated tokens each); a budget of 600 tokens allows about 5 per set
    options = {"set_size": 4, "min_set_size": 2, "max_set_size": 6, "max_set_tokens": 600}
    first = build_docsets(_options([three_topic_folder], tmp_path / "a", **options))
    build_docsets(_options([three_topic_folder], tmp_path / "b", **options))
    for name in ("docsets.jsonl", "docsets.parquet"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    sets = first["sets"]
    assert 2 <= sets["documents"]["min"] and sets["documents"]["max"] <= 6
    assert sets["tokens"]["max"] <= 600
    other_seed = build_docsets(_options([three_topic_folder], tmp_path / "c", seed=1, **options))
    assert other_seed["stages"] == first["stages"]  # filtering does not depend on the seed
    assert (tmp_path / "c" / "docsets.jsonl").read_bytes() != (tmp_path / "a" / "docsets.jsonl").read_bytes()


def test_existing_output_is_refused_or_moved_aside_never_deleted(three_topic_folder, tmp_path):
    out = tmp_path / "corpus"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    with pytest.raises(DataBuildError, match="folder is not empty. Fix: pass a new folder, or --overwrite"):
        build_docsets(_options([three_topic_folder], out))
    assert [p.name for p in out.iterdir()] == ["mine.txt"]
    build_docsets(_options([three_topic_folder], out, overwrite=True))
    moved = [p for p in tmp_path.iterdir() if p.name.startswith("corpus.replaced-")]
    assert len(moved) == 1 and (moved[0] / "mine.txt").read_text() == "keep me"
    assert (out / "docsets.jsonl").is_file()


def test_a_failure_leaves_nothing_behind(three_topic_folder, tmp_path):
    (three_topic_folder / "zz.txt").write_bytes(b"fine line\n\xff broken\n")  # read last: the build is well under way
    out = tmp_path / "corpus"
    with pytest.raises(DataBuildError, match=r"zz.txt:2: not UTF-8"):
        build_docsets(_options([three_topic_folder], out))
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs"]  # no .corpus.partial-* folder either


def test_docmath_goes_to_number_heavy_sets_only(tmp_path):
    numbers = {f"fin/{i}.txt": " ".join(f"In {2000 + i} revenue was {i * 7 + j}.5 million and costs {j * 3} million."
                                        for j in range(8)) for i in range(8)}
    prose = {f"prose/{i}.txt": topic_text("law", i) for i in range(8)}
    folder = write_folder(tmp_path / "docs", numbers | prose)
    report = build_docsets(_options([folder], tmp_path / "out", docmath=True, set_size=4, min_set_size=3))
    rows = [json.loads(line) for line in (tmp_path / "out" / "docsets.jsonl").read_text().splitlines()]
    for row in rows:
        from_numbers = {origin.split("/")[-2] for origin in row["origins"]} == {"fin"}
        assert (row["task"] == "docmath_qa") == from_numbers, row["origins"]
    assert report["sets"]["per_task"]["docmath_qa"] >= 1


def test_too_few_documents_is_one_clear_error(tmp_path):
    folder = write_folder(tmp_path / "docs", {"a.txt": topic_text("law", 1), "b.txt": topic_text("law", 2)})
    with pytest.raises(DataBuildError, match=r"only 2 document\(s\) survived .* fewer than --min-set-size=3"):
        build_docsets(_options([folder], tmp_path / "out"))


@pytest.mark.parametrize(("overrides", "message"), [
    ({"min_set_size": 9}, "need 1 <= min <= target <= max"),
    ({"min_chars": 500, "max_chars": 400}, "need 0 <= min < max"),
    ({"dedup_threshold": 1.5}, r"--dedup-threshold=1.5: must be in \(0, 1\]"),
    ({"embed_model": "/no/such/model"}, "--embed-model /no/such/model: not a folder"),
])
def test_bad_options_fail_before_reading(tmp_path, overrides, message):
    with pytest.raises(DataBuildError, match=message):
        _options([tmp_path], tmp_path / "out", **overrides)


def test_tokenizer_counts_and_embedding_model_features(three_topic_folder, tmp_path, tiny_policy_dir):
    from transformers import AutoTokenizer

    out = tmp_path / "out"
    report = build_docsets(_options([three_topic_folder], out, tokenizer=str(tiny_policy_dir),
                                    embed_model=str(tiny_policy_dir), max_set_tokens=4000))
    assert report["sets"]["token_counter"] == f"tokenizer {tiny_policy_dir}"
    assert report["clustering"]["features"] == f"model {tiny_policy_dir}"
    tokenizer = AutoTokenizer.from_pretrained(tiny_policy_dir)
    rows = [json.loads(line) for line in (out / "docsets.jsonl").read_text().splitlines()]
    totals = [sum(len(tokenizer(doc, add_special_tokens=False)["input_ids"]) for doc in row["documents"])
              for row in rows]
    assert max(totals) == report["sets"]["tokens"]["max"] and max(totals) <= 4000
    assert sum(len(row["documents"]) for row in rows) == report["sets"]["documents"]["total"]
