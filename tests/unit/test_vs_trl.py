"""Tests for benchmarks/vs_trl.py's pure helpers: the shared reward, prompt stretching and the ratio bookkeeping."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def vs_trl(load_benchmark):
    return load_benchmark("vs_trl")


@pytest.mark.parametrize("texts", [["a", "b", "c", "d", "e", "f", "g", "h"], ["same"] * 8, ["", ""], ["x"] * 5])
def test_group_rewards_always_have_variance(vs_trl, texts):
    for step in range(1, 20):
        rewards = vs_trl.group_rewards(texts, step)
        assert sorted(set(rewards)) == [0.0, 1.0]
        assert rewards.count(1.0) == len(texts) // 2


def test_group_rewards_are_a_seeded_function_of_text_and_step(vs_trl):
    texts = [f"answer {i}" for i in range(8)]
    assert vs_trl.group_rewards(texts, 3) == vs_trl.group_rewards(list(texts), 3)
    by_step = {tuple(vs_trl.group_rewards(texts, step)) for step in range(1, 30)}
    assert len(by_step) > 5  # the split moves with the step
    assert any(vs_trl.group_rewards(texts, step, seed=1) != vs_trl.group_rewards(texts, step) for step in range(5))


def test_batch_rewards_score_consecutive_groups_like_group_rewards(vs_trl):
    texts = [f"t{i}" for i in range(16)]
    prompts = ["p"] * 8 + ["q"] * 8
    assert vs_trl.batch_rewards(prompts, texts, 2, 8) == (vs_trl.group_rewards(texts[:8], 2)
                                                          + vs_trl.group_rewards(texts[8:], 2))
    with pytest.raises(ValueError, match="do not share one prompt"):
        vs_trl.batch_rewards(["p"] * 7 + ["q"] * 9, texts, 2, 8)
    with pytest.raises(ValueError, match="not groups of 8"):
        vs_trl.batch_rewards(prompts[:12], texts[:12], 2, 8)


def test_stretch_documents_appends_round_robin(vs_trl):
    assert vs_trl.stretch_documents(["A", "B"], []) == ["A", "B"]
    assert vs_trl.stretch_documents(["A", "B"], ["s1.", "s2.", "s3."]) == ["A\ns1. s3.", "B\ns2."]


def test_largest_fitting_finds_the_last_count_under_the_limit(vs_trl):
    def count(k):
        return 100 + 7 * k

    assert vs_trl.largest_fitting(count, 100, 50) == 0
    assert vs_trl.largest_fitting(count, 171, 50) == 10
    assert vs_trl.largest_fitting(count, 10_000, 50) == 50
    with pytest.raises(ValueError, match="over the target"):
        vs_trl.largest_fitting(count, 99, 50)


def _step(total, generate, update, rss, sequences=64):
    return {"total_s": total, "generate_s": generate, "update_s": update, "other_s": total - generate - update,
            "num_sequences": sequences, "sequence_tokens": 64 * 1000, "completion_tokens": 64 * 48,
            "peak_rss_mb": rss}


def test_compare_reports_min_and_median_of_paired_ratios_and_the_rss_ratio(vs_trl):
    ours = [_step(2.0, 1.0, 1.0, 500), _step(3.0, 1.0, 2.0, 600), _step(2.0, 1.0, 1.0, 550)]
    theirs = [_step(10.0, 4.0, 6.0, 1200), _step(10.0, 4.0, 6.0, 1000), _step(5.0, 2.0, 3.0, 1100)]
    ratios = vs_trl.compare(ours, theirs)
    assert ratios["total"] == {"min": 0.2, "median": 0.3}
    assert ratios["update"]["min"] == pytest.approx(1 / 6)
    assert ratios["update_per_sequence"] == ratios["update"]  # same number of sequences on both sides
    assert ratios["peak_rss"] == pytest.approx(600 / 1200)
    summary = vs_trl.summarize_steps(ours)
    assert summary["total_s"] == 2.0 and summary["peak_rss_mb"] == 600
    assert summary["update_per_sequence_ms"] == pytest.approx(1000 / 64)


def test_table_and_last_line_use_the_longest_target(vs_trl):
    steps = [_step(2.0, 1.0, 1.0, 500)]
    other = [_step(8.0, 3.0, 5.0, 1000)]
    entries = [{"label": label, "target_tokens": target, "prompt_tokens_mean": mean,
                "spell": {"summary": vs_trl.summarize_steps(steps)}, "trl": {"summary": vs_trl.summarize_steps(other)},
                "ratios": vs_trl.compare(steps, other)}
               for label, target, mean in [("natural", None, 681.0), ("4096", 4096, 4090.0)]]
    table = vs_trl.markdown_table(entries)
    assert table.count("\n") == 4 and "| 4,090 (4096) | 2.00 / 8.00 |" in table
    assert vs_trl.headline(entries) == "vs_trl: time@4096=0.25 memory@4096=0.50"
