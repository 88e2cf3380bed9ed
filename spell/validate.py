"""``spell validate``: check config, corpus, templates, held-out and labelled files, and render one prompt per
role and task, without loading a model: the start-up checks of a run, in seconds, before a GPU is touched.
(Prompt lengths in tokens need the model's tokenizer; a run counts over-long prompts as ``data/*_too_long``.)
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

from rich.console import Console
from rich.panel import Panel

from spell.config import ConfigError, SpellConfig
from spell.data import load_corpus
from spell.heldout import load_heldout
from spell.prompts import join_documents, load_templates
from spell.prompts.questioner import draw_target_letter_for, render_questioner_prompt
from spell.prompts.responder import render_responder_prompt
from spell.prompts.verifier import render_verifier_prompt
from spell.rlvr import load_labelled
from spell.types import TrainMode

PREVIEW_CHARS = 1200


def load_templates_checked(template_dir: str | None):
    """Templates, with override problems reported as config errors naming the key."""
    try:
        return load_templates(template_dir)
    except (ValueError, FileNotFoundError) as err:
        raise ConfigError(f"questioner.template_dir={template_dir!r}: {err}") from None


def check_model_folder(path: str | None) -> str:
    if path is None:
        return "built-in default policy (built on first `spell train`)"
    if not (Path(path) / "config.json").is_file():
        raise ConfigError(f"model.path={path!r}: no config.json there; point it at a Hugging Face model folder "
                          "(save_pretrained output) or a run's checkpoints/step_XXXXXX folder")
    return path


def validate(cfg: SpellConfig, console: Console | None = None) -> int:
    """Check everything cheap and show rendered prompts. Returns the exit code (0 = ok)."""
    from spell.builtin.defaults import builtin_corpus

    console = console or Console()
    if not cfg.data.train_files:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, train_files=[str(builtin_corpus(cfg))]))
    model = check_model_folder(cfg.model.path)
    heldout = load_heldout(cfg.eval)
    if cfg.train.mode == TrainMode.RLVR:
        labelled, _ = load_labelled(cfg.data.labelled_files, cfg.data.tasks)
        console.print(f"[bold green]labelled questions ok[/] {len(labelled)} (train.mode=rlvr)")
    if heldout:
        console.print(f"[bold green]held-out questions ok[/] {len(heldout)}")
    docsets, summary = load_corpus(cfg.data.train_files, cfg.data.tasks, seed=cfg.train.seed,
                                   max_docset_chars=cfg.data.docset_char_limit)
    templates = load_templates_checked(cfg.questioner.template_dir)
    console.print(f"[bold green]config ok[/] model: {model}")
    from spell.plan.cli import memory_warning  # the `spell plan` arithmetic, against the declared hardware

    memory = memory_warning(cfg)
    if memory is not None:
        console.print(f"[bold yellow]warning[/] {memory}", soft_wrap=True)
    if summary["skipped_too_long"]:
        console.print(f"[bold yellow]warning[/] {summary['skipped_too_long']} document set(s) skipped: longer than "
                      f"{cfg.data.docset_char_limit} characters (data.max_docset_chars), they cannot fit a prompt")
    console.print(f"[bold green]corpus ok[/] {summary}")
    rng = random.Random(cfg.train.seed)
    for task in cfg.data.tasks:
        docset = next(d for d in docsets if d.task == task)
        evidence = sorted(rng.sample(range(len(docset.documents)), min(cfg.questioner.num_docs,
                                                                         len(docset.documents))))
        letter = draw_target_letter_for(task, rng, enabled=cfg.questioner.balance_mc_letters)
        prompts = {
            "questioner": render_questioner_prompt(task, [docset.documents[i] for i in evidence],
                                                   target_letter=letter, templates=templates),
            "responder": render_responder_prompt(task, join_documents(docset.documents),
                                                 "<question written by the questioner>", templates),
        }
        if task in cfg.verifier.tasks and cfg.verifier.enable:
            prompts["verifier"] = render_verifier_prompt("<question>", "<responder answer>", "<reference answer>",
                                                         templates)
        for role, text in prompts.items():
            shown = text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS // 2] + "\n[...]\n" + text[
                -PREVIEW_CHARS // 2:]
            console.print(Panel(shown, title=f"{role} / {task} / docset {docset.id} ({len(text)} chars)"))
    return 0
