"""Learning benchmark: does label-free self-play raise held-out accuracy on the built-in world?

For each seed: A0 = held-out accuracy of the built-in policy (step 0 of the run), A1 = after K steps of
full SPELL; the same budget for the paper's ablations (questioner frozen, no verifier, no history memory)
and the RLVR baseline (responder-only GRPO on labelled train questions). Held-out questions come from
document sets disjoint from training and are never trained on.

    .venv/bin/python benchmarks/learning.py --seeds 0 1 2 --steps 100
    .venv/bin/python benchmarks/learning.py --seeds 0 --steps 2 --variants spell   # smoke

Writes benchmarks/results/learning.json (a0_mean, a1_mean, delta_mean, seeds, per-seed lists, one entry per
variant), learning.md and learning.png; the last line printed is
``learning: A0=<a0_mean> A1=<a1_mean> delta=<delta_mean>`` (percent, mean over seeds, full SPELL).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

VARIANTS = {
    "spell": [],
    "questioner_frozen": ["questioner.enable_update=false"],
    "no_verifier": ["verifier.enable=false"],
    "no_memory": ["memory.enable=false"],
    "rlvr": ["train.mode=rlvr"],
}
RESULTS = Path(__file__).parent / "results"


def run_variant(name: str, seed: int, steps: int, out_root: Path, extra: list[str], split: str = "heldout") -> dict:
    """Train one variant from the built-in policy; returns A0, A1 (fractions), per-task finals and timing.

    ``split``: ``heldout`` (final numbers only) or ``validation`` (for tuning: other entities, the same size).
    """
    from spell.builtin.defaults import apply_builtin_defaults, ensure_world
    from spell.config import load_config
    from spell.report import read_metrics
    from spell.trainer import Trainer

    if split == "validation":
        extra = [f"eval.heldout_files=[{ensure_world() / 'validation.jsonl'}]", *extra]
    out = out_root / f"{name}_seed{seed}"
    overrides = [f"train.seed={seed}", f"train.max_steps={steps}", f"train.save_every_steps={steps}",
                 f"output_dir={out}", "logging.progress=false", "logging.dump_samples_every=1",
                 *VARIANTS[name], *extra]
    cfg = apply_builtin_defaults(load_config("builtin", overrides))
    start = time.process_time()
    wall = time.perf_counter()
    Trainer(cfg).train()
    rows = read_metrics(out / "metrics.jsonl")
    truth = {}
    if name != "rlvr":  # RLVR has no questioner; its samples carry the labels' answers
        from spell.builtin.diagnose import diagnose_run

        windows = [(1, min(3, steps)), (max(1, steps - 2), steps)]
        truth = {window: by_task["all"] for window, by_task in
                 diagnose_run(out, ensure_world(), windows).items() if "all" in by_task}
    evaluated = [r for r in rows if r.get("heldout/accuracy") is not None]
    first, last = evaluated[0], evaluated[-1]
    return {
        "seed": seed, "a0": first["heldout/accuracy"], "a1": last["heldout/accuracy"],
        "final": {k: v for k, v in last.items() if k.startswith("heldout/")},
        "initial": {k: v for k, v in first.items() if k.startswith("heldout/")},
        "cpu_s": time.process_time() - start, "wall_s": time.perf_counter() - wall,
        "valid_rate_last": rows[-1].get("questioner/valid_rate"),
        "truth": truth,
        **run_record(out),
    }


def run_record(out: Path) -> dict:
    """What a finished run folder tells afterwards: the paired held-out change between its first and last evaluation
    (``paired``: delta, SE, 95% low and high, in points over the same questions)."""
    from spell.report import heldout_change

    change = heldout_change(out)
    overall = None if change is None else change["tasks"]["all"]
    return {"paired": None if overall is None else {k: round(overall[k], 2) for k in ("delta", "se", "low", "high")}}


def summarise(per_variant: dict[str, list[dict]], seeds: list[int]) -> dict:
    def pct(values: list[float]) -> float:
        return round(100 * statistics.fmean(values), 2)

    out: dict = {"seeds": seeds, "variants": {}}
    for name, runs in per_variant.items():
        a0 = [r["a0"] for r in runs]
        a1 = [r["a1"] for r in runs]
        out["variants"][name] = {
            "a0_mean": pct(a0), "a1_mean": pct(a1), "delta_mean": round(pct(a1) - pct(a0), 2),
            "a0": [round(100 * x, 2) for x in a0], "a1": [round(100 * x, 2) for x in a1],
            "delta_std": round(100 * statistics.pstdev([y - x for x, y in zip(a0, a1)]), 2),
            "cpu_s_mean": round(statistics.fmean(r["cpu_s"] for r in runs), 1),
            "final_by_key": {k: pct([r["final"].get(k, float("nan")) for r in runs]) for k in runs[0]["final"]},
            "initial_by_key": {k: pct([r["initial"].get(k, float("nan")) for r in runs]) for k in runs[0]["initial"]},
            "runs": runs,
        }
    main = out["variants"].get("spell") or next(iter(out["variants"].values()))
    out.update({k: main[k] for k in ("a0_mean", "a1_mean", "delta_mean", "a0", "a1")})
    return out


def merge_parts(parts: list[dict], runs_root: Path | None = None) -> dict:
    """One summary from partial results split by variant, by seed or both (runs ordered by seed).

    ``runs_root``: the ``--out`` folder of the runs; a run whose part lacks :func:`run_record`'s fields (written
    by an older version) gets them from its folder ``<runs_root>/<variant>_seed<seed>`` when that exists."""
    per_variant: dict[str, list[dict]] = {}
    for part in parts:
        for name, variant in part["variants"].items():
            per_variant.setdefault(name, []).extend(variant["runs"])
            for run in variant["runs"] if runs_root is not None else ():
                folder = runs_root / f"{name}_seed{run['seed']}"
                if "paired" not in run and (folder / "heldout").is_dir():
                    run.update(run_record(folder))
    for runs in per_variant.values():
        runs.sort(key=lambda run: run.get("seed", 0))
    ordered = {name: per_variant[name] for name in [*VARIANTS, *sorted(per_variant)] if name in per_variant}
    return summarise(ordered, sorted({seed for part in parts for seed in part["seeds"]}))


TASK_COLUMNS = ("doc_general_qa", "doc_mc", "docmath_qa")


def _task_delta(variant: dict, task: str) -> str:
    """Mean held-out change of one task in points (``-`` when the runs did not log it)."""
    key = f"heldout/{task}"
    before, after = variant.get("initial_by_key", {}).get(key), variant["final_by_key"].get(key)
    return "-" if before is None or after is None else f"{after - before:+.2f}"


def per_seed_cell(runs: list[dict]) -> str:
    """``s0: +3.67 (0.90); s1: …``: each seed's change in points with its paired standard error when recorded."""
    cells = []
    for run in runs:
        paired = run.get("paired")
        delta = 100 * (run["a1"] - run["a0"])
        cells.append(f"s{run['seed']}: {delta:+.2f}" + ("" if not paired else f" ({paired['se']:.2f})"))
    return "; ".join(cells)


def gap_cell(spell_runs: list[dict], runs: list[dict]) -> str:
    """Full SPELL's change minus the variant's, in points, averaged over the seeds both ran (``-`` if none)."""
    spell_by_seed = {run["seed"]: run["a1"] - run["a0"] for run in spell_runs}
    gaps = [spell_by_seed[run["seed"]] - (run["a1"] - run["a0"]) for run in runs if run["seed"] in spell_by_seed]
    return "-" if not gaps else f"{100 * statistics.fmean(gaps):+.2f} ({len(gaps)} seeds)"


def base_line(summary: dict) -> list[str]:
    """The base policy's held-out accuracy (step 0 of every run: the same shipped weights), overall and per task."""
    first = next(iter(summary["variants"].values()))
    tasks = ", ".join(f"{task} {first['initial_by_key'][f'heldout/{task}']:.2f}%" for task in TASK_COLUMNS
                      if f"heldout/{task}" in first.get("initial_by_key", {}))
    return [f"Base policy (no training, step 0 of each run): {first['a0_mean']}%" + (f" ({tasks})" if tasks else "")]


TRUTH_COLUMNS = ("reference_true", "responder_true", "verifier_true", "reward_true", "valid_rate",
                 "questioner_reward_true_ref", "questioner_reward_wrong_ref")


def truth_table(summary: dict) -> list[str]:
    """Markdown rows: each role's accuracy by the world's facts (mean over seeds), first and last steps."""
    lines = ["", "Roles judged by the world's facts (`spell/builtin/diagnose.py`, mean over seeds):", "",
             "| variant | steps | " + " | ".join(TRUTH_COLUMNS) + " |", "|---|---|" + "---|" * len(TRUTH_COLUMNS)]
    for variant, v in summary["variants"].items():
        windows = [run.get("truth", {}) for run in v["runs"]]
        for window in windows[0] if windows else ():
            cells = []
            for column in TRUTH_COLUMNS:
                values = [w[window][column] for w in windows if w.get(window, {}).get(column) is not None]
                cells.append(f"{statistics.fmean(values):.2f}" if values else "-")
            lines.append(f"| {variant} | {window.removeprefix('steps ')} | " + " | ".join(cells) + " |")
    return lines


def write_reports(summary: dict, steps: int, name: str = "learning") -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    summary["steps"] = steps
    (RESULTS / f"{name}.json").write_text(json.dumps(summary, indent=1) + "\n")
    lines = [f"# Learning benchmark ({steps} steps, seeds {summary['seeds']})", "", *base_line(summary), "",
             "| variant | A0 % | A1 % | delta (pts) | ± std | per seed: delta (paired SE) | vs full SPELL | "
             + " | ".join(f"{t} delta" for t in TASK_COLUMNS) + " | CPU s / run |",
             "|---|---|---|---|---|---|---|" + "---|" * len(TASK_COLUMNS) + "---|"]
    spell = summary["variants"].get("spell")
    for variant, v in summary["variants"].items():
        by_task = [_task_delta(v, task) for task in TASK_COLUMNS]
        gap = "-" if spell is None or variant == "spell" else gap_cell(spell["runs"], v["runs"])
        lines.append(f"| {variant} | {v['a0_mean']} | {v['a1_mean']} | {v['delta_mean']:+} | {v['delta_std']} | "
                     f"{per_seed_cell(v['runs'])} | {gap} | " + " | ".join(by_task)
                     + f" | {v['cpu_s_mean']} |")
    lines += ["", "vs full SPELL: full SPELL's change minus the variant's, in points, mean over the seeds both ran "
                  "(compare with the seed spread, the ± std column). CPU s: the whole run's process time, its "
                  "two evaluations of the held-out questions included, so an upper bound of the self-play part's."]
    lines += truth_table(summary)
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    names = list(summary["variants"])
    deltas = [summary["variants"][n]["delta_mean"] for n in names]
    errors = [summary["variants"][n]["delta_std"] for n in names]
    ax.bar(names, deltas, yerr=errors, color=["tab:blue" if n == "spell" else "tab:gray" for n in names])
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_ylabel("held-out accuracy change (points)")
    ax.set_title(f"{steps} steps, mean over seeds {summary['seeds']}")
    fig.tight_layout()
    fig.savefig(RESULTS / f"{name}.png", dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=100, help="self-play steps per run (the builtin preset's 100)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--out", type=Path, default=Path("runs/learning"))
    parser.add_argument("--name", default="learning", help="results file stem (parallel partial runs)")
    parser.add_argument("--split", choices=("heldout", "validation"), default="heldout",
                        help="questions to measure on: validation while tuning, heldout for the final numbers")
    parser.add_argument("--merge", type=Path, nargs="+", help="merge partial results files instead of running")
    parser.add_argument("--runs", type=Path, help="with --merge: the runs' --out folder, to fill in the paired SE of "
                        "parts written before it was recorded")
    parser.add_argument("overrides", nargs="*", help="extra key=value overrides for every run")
    args = parser.parse_args()
    if args.merge:
        parts = [json.loads(path.read_text()) for path in args.merge]
        summary = merge_parts(parts, args.runs)
        write_reports(summary, parts[0]["steps"], args.name)
        print(f"learning: A0={summary['a0_mean']} A1={summary['a1_mean']} delta={summary['delta_mean']}")
        return
    from spell.rl.metrics import setup_logging

    setup_logging(level="WARNING")
    per_variant: dict[str, list[dict]] = {name: [] for name in args.variants}
    for seed in args.seeds:
        for name in args.variants:
            result = run_variant(name, seed, args.steps, args.out, args.overrides, args.split)
            per_variant[name].append(result)
            print(json.dumps({"variant": name, "seed": seed, "a0": result["a0"], "a1": result["a1"],
                              "cpu_s": round(result["cpu_s"], 1)}), flush=True)
    summary = summarise(per_variant, args.seeds)
    summary["split"] = args.split
    write_reports(summary, args.steps, args.name)
    print(f"learning: A0={summary['a0_mean']} A1={summary['a1_mean']} delta={summary['delta_mean']}")


if __name__ == "__main__":
    main()
