"""``spell eval``: arguments and the driver (spec §9). The lead's ``spell/cli.py`` wires these in.

``run_eval`` loads and validates every benchmark file and the judge settings before any model is
loaded, so bad input fails in seconds with a one-line message and exit code 2. It then generates what
``generations.jsonl`` still lacks (resume), scores (rule, then the optional judge), and writes
``results.json``, ``results.md`` and ``passk.png`` into ``--output-dir``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
from pathlib import Path

from spell.config.run import attention_limit, parse_rope_scaling, rope_scaling_fields
from spell.evaluate.formats import NATIVE_BENCHMARKS, DataError, EvalItem
from spell.evaluate.judge import JudgeConfigError, LLMJudge
from spell.evaluate.metrics import summarize
from spell.evaluate.native import benchmark_name, load_benchmark
from spell.evaluate.report import (
    MARKDOWN_FILE,
    PLOT_FILE,
    RESULTS_FILE,
    ResultsFileError,
    load_results,
    plot_passk,
    render_markdown,
    write_results,
)
from spell.evaluate.runner import (
    GENERATIONS_FILE,
    PromptTooLongError,
    apply_judge,
    generate_missing,
    load_generations,
    select_records,
    write_generations,
)
from spell.prompts import load_templates
from spell.types import SamplingParams

logger = logging.getLogger(__name__)

EXIT_USAGE = 2
RUN_CONFIG_FILE = "run_config.json"
_SETTINGS_THAT_CHANGE_SAMPLES = ("model", "temperature", "top_p", "max_new_tokens", "max_input_tokens", "template_dir",
                                 "rope_scaling")


class EvalSetupError(ValueError):
    """A bad ``spell eval`` argument (model path, judge settings ...), reported in one line."""


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``spell eval`` options to ``parser``."""
    add = parser.add_argument
    add("--model", required=True, help="HF model folder, or a training checkpoint / output folder")
    add(
        "--benchmarks",
        default=",".join(NATIVE_BENCHMARKS),
        help="comma list of " + ", ".join(NATIVE_BENCHMARKS) + " and jsonl:PATH (generic format)",
    )
    add("--data-dir", default=None, help="folder with the native benchmark files (layout: README, `Evaluation`)")
    add("--output-dir", default="runs/eval", help="where generations.jsonl and the reports go; re-use it to resume")
    add("--max-input-tokens", type=int, default=16384, help="middle-truncate longer prompts (paper: 16K, 100K)")
    add("--n", type=int, default=8, help="samples per question (paper: 8)")
    add("--temperature", type=float, default=0.7, help="0 = greedy decoding (then one sample per question)")
    add("--top-p", type=float, default=0.95)
    add("--max-new-tokens", type=int, default=4096, help="paper: 4K (non-reasoning), 20K (reasoning models)")
    add("--limit", type=int, default=None, help="first N questions of each benchmark")
    add("--engine", choices=("hf", "vllm"), default="hf")
    add("--device", default="auto", choices=("auto", "cpu", "cuda"))
    add("--seed", type=int, default=42)
    add(
        "--batch-prompts",
        type=int,
        default=None,
        help="questions per engine call (default: 8 for hf, 128 for vllm; lower it for long prompts on hf)",
    )
    add("--gpu-memory-utilization", type=float, default=0.9, help="vLLM on a GPU only")
    add("--cpu-kv-cache-gb", type=float, default=1.0, help="vLLM on a CPU only: GiB of host RAM for the KV cache")
    add("--tensor-parallel-size", type=int, default=1, help="vLLM only")
    add("--template-dir", default=None, help="folder overriding the responder templates (as in training)")
    add("--rope-scaling", default=None, metavar="yarn:FACTOR",
        help="RoPE scaling applied when the model loads (HF and vLLM), e.g. yarn:4: Qwen2.5's 32,768 trained "
        "positions attend 131,072 (the paper's 100K setting)")
    add("--progress", action=argparse.BooleanOptionalAction, default=None,
        help="progress bar with throughput and ETA on stderr (default: when stderr is a terminal)")
    add("--judge-url", default=None, help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1")
    add("--judge-model", default=None, help="served judge model name (paper: gpt-oss-120b)")
    add("--judge-api-key-env", default=None, help="NAME of the environment variable holding the judge API key")
    add("--judge-timeout-s", type=float, default=120.0)
    add("--judge-concurrency", type=int, default=8)
    add("--judge-max-retries", type=int, default=3)
    add("--judge-max-tokens", type=int, default=8192)
    add("--compare", default=None, help="another run's results.json (or its folder) to overlay")


def _check_numbers(args: argparse.Namespace) -> None:
    if args.batch_prompts is None:
        args.batch_prompts = 128 if args.engine == "vllm" else 8
    for name in ("n", "max_new_tokens", "max_input_tokens", "batch_prompts", "judge_concurrency"):
        if getattr(args, name) < 1:
            raise EvalSetupError(f"--{name.replace('_', '-')} {getattr(args, name)}: must be >= 1")
    if not args.cpu_kv_cache_gb > 0:
        raise EvalSetupError(f"--cpu-kv-cache-gb {args.cpu_kv_cache_gb}: must be > 0 (GiB of host RAM)")
    if args.limit is not None and args.limit < 1:
        raise EvalSetupError(f"--limit {args.limit}: must be >= 1 (leave it out for all questions)")
    if not args.temperature >= 0 or not 0 < args.top_p <= 1:
        raise EvalSetupError("--temperature must be >= 0 (0 = greedy) and --top-p in (0, 1] (paper: 0.7 and 0.95)")
    if args.temperature == 0 and args.n > 1:
        logger.warning("--temperature 0 is greedy decoding: its %d samples would be identical; generating one "
                       "per question (--n 1)", args.n)
        args.n = 1
    if args.rope_scaling is not None:
        try:
            parse_rope_scaling(args.rope_scaling)
        except ValueError as err:
            raise EvalSetupError(f"--rope-scaling {err}") from None
    if bool(args.judge_url) != bool(args.judge_model):
        raise EvalSetupError("--judge-url and --judge-model go together; give both or neither")


def load_items(specs: list[str], data_dir: str | None, limit: int | None) -> list[EvalItem]:
    """All questions of the requested benchmarks (raises :class:`DataError` on any file problem)."""
    names = [benchmark_name(spec) for spec in specs]
    for name in names:
        if names.count(name) > 1 or name == "average":
            raise DataError(f"--benchmarks: benchmark name {name!r} is used twice or reserved; rename the file")
    items: list[EvalItem] = []
    for spec in specs:
        loaded = load_benchmark(spec, data_dir, limit)
        logger.info("%s: %d questions", benchmark_name(spec), len(loaded))
        items.extend(loaded)
    return items


def resolve_model_path(path: str | Path, output_dir: str | Path | None = None) -> Path:
    """The HF model folder behind ``--model``.

    Accepts an HF folder, a training checkpoint (``.../checkpoints/step_000070``) or a training output dir (its
    latest complete checkpoint is used). A checkpoint is exported once (``spell export``, LoRA merged) into
    ``{output_dir}/model_{run}_{step}`` and that folder is used; a re-run reuses it.

    Raises:
        EvalSetupError: nothing loadable found.
    """
    from spell.rl.checkpoint import COMPLETE_MARKER, latest_checkpoint

    path = Path(path).expanduser()
    checkpoint = path if (path / COMPLETE_MARKER).is_file() else latest_checkpoint(path) if path.is_dir() else None
    if checkpoint is not None and (checkpoint / "dcp").is_dir() and output_dir is not None:
        from spell.rl.export import export_checkpoint

        exported = Path(output_dir) / f"model_{checkpoint.parent.parent.name}_{checkpoint.name}"
        if not (exported / "config.json").is_file():
            logger.info("--model %s: exporting checkpoint %s to %s", path, checkpoint, exported)
            export_checkpoint(checkpoint, exported)
        return exported
    if (path / "config.json").is_file():
        return path
    if checkpoint is not None and (checkpoint / "config.json").is_file():
        logger.info("--model %s: using its latest checkpoint %s", path, checkpoint)
        return checkpoint
    raise EvalSetupError(
        f"--model {path}: no config.json there and no complete checkpoint under {path / 'checkpoints'}; "
        "pass an HF model folder, a checkpoint folder or a training output dir"
    )


def model_positions(model_path: Path, rope_scaling: str | None) -> int | None:
    """Positions the model at ``model_path`` attends: its config.json's ``max_position_embeddings``, or with YaRN
    (``--rope-scaling``, or declared in the config.json) the trained positions x the factor. None if unknown.

    Raises:
        EvalSetupError: an unreadable config.json, or a rope scaling the model cannot take.
    """
    try:
        config = json.loads((model_path / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise EvalSetupError(f"{model_path / 'config.json'}: cannot read it ({err})") from None
    config = config.get("text_config", config)
    if not config.get("max_position_embeddings"):
        return None
    try:
        return attention_limit(config, rope_scaling)
    except ValueError as err:
        raise EvalSetupError(f"--rope-scaling {err}") from None


def rope_scaled_folder(model_path: Path, rope_scaling: str, output_dir: Path) -> Path:
    """A folder that loads ``model_path`` with ``rope_scaling`` in any loader (vLLM reads the model from disk):
    its config.json gains the rope-scaling fields, every other file is a symbolic link to the original.
    Written into ``output_dir`` (``{model}_{type}{factor}_{hash of the model's resolved path}``, so two models of
    the same folder name never share one) and reused; links that point elsewhere are replaced."""
    kind, factor = parse_rope_scaling(rope_scaling)
    source_dir = model_path.resolve()
    digest = hashlib.sha256(str(source_dir).encode()).hexdigest()[:8]
    folder = output_dir / f"{source_dir.name}_{kind}{factor:g}_{digest}"
    config = json.loads((model_path / "config.json").read_text(encoding="utf-8"))
    config.update(rope_scaling_fields(config, rope_scaling))
    folder.mkdir(parents=True, exist_ok=True)
    for source in sorted(source_dir.iterdir()):
        target = folder / source.name
        if source.name == "config.json" or (target.is_symlink() and target.resolve() == source.resolve()):
            continue
        if target.is_symlink():
            target.unlink()  # a link of ours to an older file: point it at the current one
        target.symlink_to(source)
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return folder


def _engine_factory(args: argparse.Namespace, model_path: Path):
    """A function that loads the model and builds the engine (called only if something must be generated)."""

    def build():
        import torch

        from spell.config import ModelConfig
        from spell.rl.engine import HFEngine
        from spell.rl.policy import load_policy, resolve_device

        if args.engine == "hf":
            model_cfg = ModelConfig(path=str(model_path), rope_scaling=args.rope_scaling)
            model, tokenizer = load_policy(model_cfg, resolve_device(args.device))
            model.eval()
            return HFEngine(model, tokenizer, max_batch_prompts=args.batch_prompts)
        from spell.rl.engine.vllm import VLLMEngine

        # vLLM loads the weights itself from the folder (rope scaling: a folder whose config.json declares it);
        # the HF copy only describes the model (dtype, eos).
        folder = rope_scaled_folder(model_path, args.rope_scaling, Path(args.output_dir)) if args.rope_scaling \
            else model_path
        model, tokenizer = load_policy(ModelConfig(path=str(folder), dtype="bfloat16"), torch.device("cpu"))
        longest = args.max_input_tokens + args.max_new_tokens
        max_positions = model_positions(model_path, args.rope_scaling)
        return VLLMEngine(
            model,
            tokenizer,
            gpu_memory_utilization=args.gpu_memory_utilization,
            tensor_parallel_size=args.tensor_parallel_size,
            max_model_len=min(longest, max_positions) if max_positions else longest,  # vLLM refuses more
            seed=args.seed,
            cpu_kv_cache_gb=args.cpu_kv_cache_gb,
        )

    return build


def _prompt_tokenizer(model_path: Path, max_positions: int | None, args: argparse.Namespace):
    """The model's tokenizer when some prompt could exceed ``max_positions`` (checked before the model loads),
    else None: middle truncation to ``--max-input-tokens`` already keeps every prompt within the limit."""
    if max_positions is None or args.max_input_tokens + args.max_new_tokens <= max_positions:
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_path, local_files_only=True)


def _build_judge(args: argparse.Namespace, output_dir: Path) -> LLMJudge | None:
    if not args.judge_url:
        return None
    return LLMJudge(
        args.judge_url,
        args.judge_model,
        api_key_env=args.judge_api_key_env,
        timeout_s=args.judge_timeout_s,
        concurrency=args.judge_concurrency,
        max_retries=args.judge_max_retries,
        max_tokens=args.judge_max_tokens,
        cache_path=output_dir / "judge_cache.jsonl",
    )


def _record_settings(args: argparse.Namespace, model_path: Path, output_dir: Path) -> None:
    settings = {key: getattr(args, key) for key in vars(args) if not key.startswith("_") and key != "func"}
    settings["model"] = str(model_path)
    path = output_dir / RUN_CONFIG_FILE
    try:
        previous = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, json.JSONDecodeError):
        previous = None
    if isinstance(previous, dict):
        changed = [key for key in _SETTINGS_THAT_CHANGE_SAMPLES if previous.get(key) != settings.get(key)]
        if changed:
            logger.warning("%s holds samples made with other %s; kept samples are reused as is", output_dir, changed)
    path.write_text(json.dumps(settings, indent=2, default=str) + "\n", encoding="utf-8")


def run_eval(args: argparse.Namespace) -> int:
    """Run ``spell eval`` with parsed ``args``; returns the exit code (0 ok, 2 bad input)."""
    try:
        _check_numbers(args)
        specs = [spec.strip() for spec in args.benchmarks.split(",") if spec.strip()]
        items = load_items(specs, args.data_dir, args.limit)
        compare = load_results(args.compare) if args.compare else None
        output_dir = Path(args.output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        model_path = resolve_model_path(args.model, output_dir)
        max_positions = model_positions(model_path, args.rope_scaling)
        judge = _build_judge(args, output_dir)
        templates = load_templates(args.template_dir)
    except (DataError, EvalSetupError, JudgeConfigError, ResultsFileError, OSError, ValueError) as err:
        logger.error("spell eval: %s", err)
        return EXIT_USAGE
    _record_settings(args, model_path, output_dir)
    sampling = SamplingParams(args.temperature, args.top_p, args.max_new_tokens, args.seed)
    generations = output_dir / GENERATIONS_FILE
    try:
        generate_missing(
            items,
            _engine_factory(args, model_path),
            sampling,
            args.n,
            generations,
            max_input_tokens=args.max_input_tokens,
            batch_prompts=args.batch_prompts,
            templates=templates,
            max_positions=max_positions,
            tokenizer=_prompt_tokenizer(model_path, max_positions, args),
            progress=args.progress,
        )
    except PromptTooLongError as err:
        logger.error("spell eval: %s", err)
        return EXIT_USAGE
    records = load_generations(generations)
    judged = apply_judge(select_records(records, items, args.n), items, judge)
    write_generations(generations, records)
    if judge is not None:
        logger.info("judge: %d samples needed a verdict; %s", judged, judge.stats.as_dict())
        if judge.stats.errors or judge.stats.invalid:
            logger.warning(
                "judge: %d failed and %d malformed replies scored by rule only; re-run to retry them",
                judge.stats.errors,
                judge.stats.invalid,
            )
    results = summarize(select_records(records, items, args.n))
    _write_reports(args, results, compare, model_path, output_dir)
    logger.info("avg@%d (4-column average): %.1f%%", args.n, 100 * results["average"].get("avg@n", 0.0))
    return 0


def _write_reports(args, results: dict, compare: dict | None, model_path: Path, output_dir: Path) -> None:
    label = Path(args.model).resolve().name or str(model_path)
    compare_label = "compare"
    if compare is not None:
        compare_path = Path(args.compare).resolve()
        compare_label = compare_path.name if compare_path.is_dir() else compare_path.parent.name
    note = (
        f"avg@n in percent; n = {args.n}, "
        + (f"T = {args.temperature}, top-p = {args.top_p}, " if args.temperature > 0 else "greedy, ")
        + f"max input {args.max_input_tokens} tokens, max new {args.max_new_tokens} tokens"
        + (f", RoPE {args.rope_scaling}" if args.rope_scaling else "")
        + (f", judge {args.judge_model}" if args.judge_url else ", rule scores only")
    )
    write_results(output_dir / RESULTS_FILE, results)
    text = render_markdown(results, label, compare, compare_label, note)
    (output_dir / MARKDOWN_FILE).write_text(text, encoding="utf-8")
    plot_passk(results, output_dir / PLOT_FILE, label, compare, compare_label)
    logger.info("wrote %s, %s, %s in %s", RESULTS_FILE, MARKDOWN_FILE, PLOT_FILE, output_dir)
