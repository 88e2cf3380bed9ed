"""``BOOTSTRAP.md``: the human-readable record of a bootstrap run (issue 5): command, stages, measured numbers.

The same numbers are in ``bootstrap.json`` next to it; this file only formats them as markdown tables.
"""

from __future__ import annotations

import platform
from pathlib import Path


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _stage_rows(stages: dict) -> list[str]:
    rows = ["| stage | steps | seconds | tokens | final loss | last check |", "|---|---|---|---|---|---|"]
    for name, report in stages.items():
        check = report["checks"][-1] if report["checks"] else {}
        shown = ", ".join(f"{k} {v}" for k, v in check.items() if k != "step")
        rows.append(f"| {name} | {report['steps']} | {report['seconds']} | {report['tokens']} | "
                    f"{report['final_loss']} | {shown} |")
    return rows


def _heldout_rows(measured: dict) -> list[str]:
    runs = {k: v for k, v in measured.items() if k.startswith("heldout_")}
    keys = sorted({k for v in runs.values() for k in (*v["by_task"], *v["by_task_hops"])})
    rows = ["| held-out | " + " | ".join(runs) + " |", "|---|" + "---|" * len(runs)]
    rows.append("| overall | " + " | ".join(_pct(v["overall"]) for v in runs.values()) + " |")
    for key in keys:
        cells = [_pct(v["by_task"].get(key, v["by_task_hops"].get(key))) for v in runs.values()]
        rows.append(f"| {key} | " + " | ".join(cells) + " |")
    rows.append("| responder format rate | " + " | ".join(_pct(v["format_rate"]) for v in runs.values()) + " |")
    return rows


def _mc_rows(mc: dict | None) -> list[str]:
    if not mc:  # records written before the measurement existed
        return []
    return [f"MC answers (greedy, {mc['num']} validation questions): right letter {_pct(mc['letter_right'])}, right "
            f"option text {_pct(mc['text_right'])}, text is one of the options {_pct(mc['stated_an_option'])}, and "
            f"then its own letter {_pct(mc['letter_of_stated_option'])}; most written letter {mc['top_letter']} "
            f"({_pct(mc['top_letter_share'])}).", ""]


def _questioner_rows(measured: dict) -> list[str]:
    rows = ["| questioner prompts (T=0.7) | task | valid | bad_format | dropped | answer in docs | solver "
            "recognised | reference true | responder true | n |", "|---|---|---|---|---|---|---|---|---|---|"]
    for label in ("questioner_plain", "questioner_history"):
        for task, r in measured.get(label, {}).items():
            rows.append(f"| {label.split('_')[1]} | {task} | {_pct(r['valid'])} | {_pct(r['bad_format'])} | "
                        f"{_pct(r['dropped'])} | {_pct(r['answer_in_docs'])} | {_pct(r.get('solver_parsed'))} | "
                        f"{_pct(r.get('reference_true'))} | {_pct(r.get('responder_true'))} | {r['num']} |")
    return rows


STAGES_TEXT = """Stages (`spell/builtin/bootstrap/pipeline.py`; loss on target tokens only; AdamW, warm-up + cosine
per stage):

1. `copy`: random token sequences repeated after a separator (grows induction heads); ends early once
   the teacher-forced copy token accuracy reaches 97%.
2. `retrieval`: copy + key-value lookup + "continue a unique span of these train documents".
3. `qa_short` / `qa_full`: chats of several 1-hop questions over 1-2 (then 1-5) documents of a train set in
   the responder format (plus 20% verifier chats).
4. `roles`: single-turn transcripts in the exact self-play prompts: responder (1-hop, 10% multi-hop),
   questioner (question + answer grounded in the 3 documents shown; 30% with remembered examples),
   verifier (YES / NO, balanced), and packed QA.

Targets: questioner = "Question: Q" and Q's answer in the responder's words, then a json code block with
"question" and "answer" (DocMath answers are arithmetic expressions over the documents' figures, evaluated by
the project's safe evaluator); responder "The correct answer is X." / "Therefore, the answer is \\boxed{expr}." /
"X is option L. The correct answer is L."; verifier "Decision: [[YES]]" / "Decision: [[NO]]". Only the world's
train sets are used."""


def render_report(result: dict) -> str:
    """The markdown text of ``BOOTSTRAP.md`` for a :func:`~spell.builtin.bootstrap.pipeline.run_bootstrap` result."""
    cfg, training = result["config"], result["training"]
    lines = [
        "# Built-in default policy: bootstrap record",
        "",
        "Rebuild (deterministic for the same seed, thread count and machine type; CPU only):",
        "",
        "```bash",
        result["command"],
        "```",
        "",
        f"- seed {cfg['seed']}, world seed {cfg['world_seed']}, {cfg['threads']} torch threads, torch "
        f"{result['torch']}, {platform.machine()}",
        f"- Qwen2: hidden {cfg['hidden']}, {cfg['layers']} layers, {cfg['heads']} heads ({cfg['kv_heads']} kv), "
        f"vocab {training['vocab_size']} (BPE on the world's train documents + templates), "
        f"{training['parameters']:,} parameters",
        f"- trained on {cfg['num_sets']} train document sets of the world (last 50 held back for validation); "
        "never on held-out sets",
        f"- wall time: stages {sum(r['seconds'] for r in training['stages'].values()):.0f} s (sum of the stage "
        f"rows), this invocation {result['total_seconds']} s (training {result['train_seconds']} s)",
        "",
        STAGES_TEXT,
        "",
        *_stage_rows(training["stages"]),
        "",
    ]
    measured = result.get("measurements")
    if measured:
        verifier, probe = measured["verifier"], measured["selfplay_probe"]
        lines += [
            "## Measurements (real prompts, HF engine, rule scorers)", "",
            *_heldout_rows(measured), "",
            f"Verifier on parsed held-out responses (T=0.7), verdict vs rule score: accuracy "
            f"{_pct(verifier['accuracy'])} ({verifier['by_task']}), invalid {_pct(verifier['invalid_rate'])}, "
            f"YES rate {_pct(verifier['yes_rate'])} (rule YES rate {_pct(verifier['rule_yes_rate'])}), "
            f"n={verifier['num']}.", "",
            *_mc_rows(measured.get("mc_mapping")),
            *_questioner_rows(measured), "",
            f"One real self-play round (builtin preset, {probe['num_questions']} train sets): statuses "
            f"{probe['status_rates']}, responder rule score mean {probe['responder_rule_score_mean']}, groups with "
            f"reward variance {probe['groups_with_variance']} ({_pct(probe['groups_with_variance_rate'])}).",
            "", f"Measurement time: {measured['eval_seconds']} s.",
        ]
    return "\n".join(lines) + "\n"


def write_report(result: dict, out: Path) -> Path:
    """Write ``BOOTSTRAP.md`` into ``out``; returns its path."""
    path = Path(out) / "BOOTSTRAP.md"
    path.write_text(render_report(result), encoding="utf-8")
    return path
