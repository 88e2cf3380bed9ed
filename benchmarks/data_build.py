"""`spell data build` on real text: documents per second per stage, peak memory, and how time grows with N.

Corpus: the docstrings of Python's standard library (every module, class and function docstring of at least
--min-chars characters, found with ``ast`` in the interpreter's stdlib source, site-packages excluded) plus the
stdlib's own .txt/.rst files, in sorted file order: a few thousand real documents nobody here wrote. The stdlib
holds fewer than the larger sizes need, so a corpus of N documents is the real documents followed by
N - (number of real ones) *pairs*: pair i joins two real docstrings drawn by ``random.Random(i)`` (so every
smaller corpus is a prefix of the larger ones). Pairs that share a long docstring are genuine near duplicates
of each other or of it, so the near-duplicate stage has real work at every size.

Each size runs ``spell.corpus.build_docsets`` with the default options in its own process, so the peak
resident memory (VmHWM of /proc/self/status) is that size's alone. Stage times come from the build's report;
the near-duplicate stage is the MinHash signatures plus the LSH query/insert. The exponent b of
``time = a * N^b`` (least squares on log-log) says how a stage grows: 1 is linear, 2 quadratic.

    .venv/bin/python benchmarks/data_build.py                 # N = 10K, 20K, 50K, 100K
Writes benchmarks/results/data_build.json; the last line is ``data_build: docs_per_s@N=... exponent=...``.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import os
import platform
import random
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

from spell.plan.measure import peak_rss

ROOT = Path(__file__).resolve().parents[1]
# filter-pass laps of the build report -> the stage they belong to here
NEAR_DUP_LAPS = ("minhash", "near_dedup")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 20_000, 50_000, 100_000])
    parser.add_argument("--min-chars", type=int, default=100, help="shortest docstring kept")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "data_build.json"))
    parser.add_argument("--one", nargs=2, metavar=("CORPUS", "OUT"), help=argparse.SUPPRESS)  # child process
    return parser.parse_args(argv)


def stdlib_documents(min_chars: int) -> tuple[list[str], dict]:
    """Docstrings (>= min_chars) of the stdlib's .py files and its .txt/.rst files, in sorted path order."""
    root = Path(sysconfig.get_paths()["stdlib"])
    documents, counts = [], {"py_files": 0, "docstrings": 0, "text_files": 0}
    for path in sorted(root.rglob("*")):
        if "site-packages" in path.parts or not path.is_file():
            continue
        if path.suffix == ".py":
            found = _docstrings(path, min_chars)
            counts["py_files"] += 1
            counts["docstrings"] += len(found)
            documents += found
        elif path.suffix in (".txt", ".rst"):
            text = path.read_text(encoding="utf-8", errors="replace")
            if len(text.strip()) >= min_chars:
                counts["text_files"] += 1
                documents.append(text)
    return documents, {"stdlib": str(root), **counts, "documents": len(documents)}


def _docstrings(path: Path, min_chars: int) -> list[str]:
    try:
        tree = ast.parse(path.read_bytes())
    except (SyntaxError, ValueError):  # a few test files are deliberately invalid
        return []
    kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    texts = (ast.get_docstring(node) for node in ast.walk(tree) if isinstance(node, kinds))
    return [text for text in texts if text and len(text) >= min_chars]


def corpus_of(real: list[str], size: int) -> list[str]:
    """The first ``size`` documents: the real ones, then deterministic pairs of them."""
    documents = real[:size]
    for index in range(size - len(documents)):
        rng = random.Random(index)
        first, second = rng.sample(range(len(real)), 2)
        documents.append(real[first] + "\n\n" + real[second])
    return documents


def fit_exponent(xs: list[float], ys: list[float]) -> float:
    """Slope b of log y = log a + b log x (least squares), rounded to 3 decimals.

    >>> fit_exponent([1, 2, 4], [3, 12, 48])
    2.0
    """
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = statistics.fmean(lx), statistics.fmean(ly)
    return round(sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx), 3)


def peak_rss_mib() -> float:
    """This process's peak RSS (VmHWM)."""
    return peak_rss() / 2**20


def run_one(corpus: str, out: str) -> None:
    """Child process: one build; prints its report's counts, timings and the peak memory as JSON."""
    from spell.corpus import BuildOptions
    from spell.corpus.build import build_docsets

    report = build_docsets(BuildOptions(inputs=(corpus,), out=out))
    keys = ("stages", "timing_s", "cpu_s", "sets", "clustering", "near_dedup")
    print(json.dumps({**{key: report[key] for key in keys}, "peak_rss_mib": round(peak_rss_mib(), 1)}))


def measure(size: int, real: list[str], work: Path) -> dict:
    corpus = work / f"corpus_{size}.jsonl"
    num_chars = 0
    with corpus.open("w", encoding="utf-8") as handle:
        for text in corpus_of(real, size):
            handle.write(json.dumps({"text": text}) + "\n")
            num_chars += len(text)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, "--one", str(corpus), str(work / f"out_{size}")],
                          capture_output=True, text=True, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["wall_s"] = round(time.perf_counter() - started, 2)
    result["characters"] = num_chars
    result["docs_per_s"] = _stage_rates(result, "timing_s")
    result["docs_per_cpu_s"] = _stage_rates(result, "cpu_s")
    return result


def _stage_rates(result: dict, clock: str) -> dict:
    """Documents per second of each stage: documents that entered it / its seconds (wall or CPU)."""
    timing = result[clock]
    entered = {s["stage"]: s["in"] for s in result["stages"]}
    num_docs = entered["read"]
    stages = {
        "read": (num_docs, timing.get("read", 0.0)),
        "length": (entered["length"], timing.get("length", 0.0)),
        "exact_dedup": (entered["exact_dedup"], timing.get("exact_dedup", 0.0)),
        "near_dedup": (entered["decontamination"], sum(timing.get(lap, 0.0) for lap in NEAR_DUP_LAPS)),
        "token_budget": (entered["token_budget"], timing.get("token_budget", 0.0)),
        "store": (entered["clustering"], timing.get("store", 0.0)),
        "features": (entered["clustering"], timing["features"]),
        "cluster": (entered["clustering"], timing["cluster"]),
        "write": (entered["clustering"], timing["write"]),
        "total": (num_docs, timing["total"]),
    }
    return {name: round(docs / seconds) if seconds > 0 else None for name, (docs, seconds) in stages.items()}


def main() -> None:
    args = parse_args()
    if args.one:
        run_one(*args.one)
        return
    started = time.perf_counter()
    real, source = stdlib_documents(args.min_chars)
    print(f"corpus: {source['documents']} real documents ({source['docstrings']} docstrings from "
          f"{source['py_files']} .py files, {source['text_files']} .txt/.rst files) in "
          f"{time.perf_counter() - started:.1f} s", flush=True)
    runs = {}
    with tempfile.TemporaryDirectory(prefix="data_build_bench_") as tmp:
        for size in args.sizes:
            runs[size] = measure(size, real, Path(tmp))
            rates, timing, cpu = runs[size]["docs_per_s"], runs[size]["timing_s"], runs[size]["cpu_s"]
            print(f"N={size}: total {timing['total']:.1f} s wall / {cpu['total']:.1f} s CPU "
                  f"({rates['total']} docs/s), "
                  f"near-dup {sum(cpu.get(lap, 0) for lap in NEAR_DUP_LAPS):.1f} s CPU, features "
                  f"{cpu['features']:.1f}, cluster {cpu['cluster']:.1f}, peak {runs[size]['peak_rss_mib']:.0f} MiB, "
                  f"{runs[size]['sets']['count']} sets", flush=True)
    sizes = list(runs)
    exponents = {}
    for clock in ("cpu_s", "timing_s"):
        near_dup = [sum(runs[n][clock].get(lap, 0) for lap in NEAR_DUP_LAPS) for n in sizes]
        exponents[clock] = {
            "near_dedup": fit_exponent(sizes, near_dup),
            # pairs are twice as long as real docstrings and fill more of the larger corpora: time vs characters
            "near_dedup_vs_characters": fit_exponent([runs[n]["characters"] for n in sizes], near_dup),
            "lsh_only": fit_exponent(sizes, [runs[n][clock]["near_dedup"] for n in sizes]),
            "cluster": fit_exponent(sizes, [runs[n][clock]["cluster"] for n in sizes]),
            "total": fit_exponent(sizes, [runs[n][clock]["total"] for n in sizes]),
        }
    exponents["peak_rss"] = fit_exponent(sizes, [runs[n]["peak_rss_mib"] for n in sizes])
    exponents["lsh_candidates"] = fit_exponent(sizes, [max(1, runs[n]["near_dedup"]["candidates_checked"])
                                                       for n in sizes])
    result = {
        "benchmark": "data_build",
        "corpus": {**source, "pairs_note": "sizes above the real count are filled with pairs of real docstrings"},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "note": "2-core CPU shared with other work during the run"},
        "runs": {str(n): runs[n] for n in sizes},
        "exponents": exponents,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    rates = " ".join(f"docs_per_s@{n}={runs[n]['docs_per_s']['total']}" for n in sizes)
    cpu = exponents["cpu_s"]
    print(f"data_build: {rates} exponent={cpu['near_dedup']:.2f} (near-duplicate stage, CPU time vs N; vs characters "
          f"{cpu['near_dedup_vs_characters']:.2f}; wall {exponents['timing_s']['near_dedup']:.2f}; whole build "
          f"{cpu['total']:.2f})")


if __name__ == "__main__":
    main()
