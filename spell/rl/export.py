"""``spell export CHECKPOINT --out DIR``: a training checkpoint as a plain Hugging Face model folder.

A checkpoint holds DCP shards (any number of ranks) plus the model's ``config.json`` and tokenizer
(:mod:`spell.rl.checkpoint`). Export loads them into one unsharded model in this process and writes
``model.safetensors`` (+ config, generation config, tokenizer), which ``from_pretrained``, ``spell eval`` and
vLLM load. With LoRA the checkpoint holds only the adapter: the base model is read from the folder the run
trained on (``base_model_name_or_path`` in the saved ``adapter_config.json``, or ``base_model``), and the export
holds the MERGED weights, or with ``adapter_only`` the PEFT adapter alone (``adapter_model.safetensors``).
"""

from __future__ import annotations

import logging
from pathlib import Path

from spell.rl.checkpoint import COMPLETE_MARKER, CheckpointError, load_checkpoint

logger = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"


def _check_paths(ckpt: Path, out: Path) -> None:
    if not (ckpt / COMPLETE_MARKER).is_file():
        raise CheckpointError(f"{ckpt} is not a complete checkpoint (no {COMPLETE_MARKER} marker). Fix: pass a "
                              "run's checkpoints/step_XXXXXX folder")
    if out.exists() and any(out.iterdir()):
        raise CheckpointError(f"--out {out} exists and is not empty; nothing was written. Fix: pick a new folder")


def _load_base(ckpt: Path, base_model: str | None):
    """The frozen base a LoRA checkpoint's adapter was trained on, with the adapter structure added."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    lora = LoraConfig.from_pretrained(str(ckpt))
    base_path = base_model or lora.base_model_name_or_path
    if not base_path or not Path(base_path).is_dir():
        raise CheckpointError(f"{ckpt} holds a LoRA adapter whose base model folder {base_path!r} is not there. "
                              "Fix: pass --base-model PATH (the run's model.path)")
    base = AutoModelForCausalLM.from_pretrained(base_path, local_files_only=True)
    return get_peft_model(base, lora)


def load_checkpoint_model(ckpt: str | Path, base_model: str | None = None):
    """The model of a checkpoint, unsharded, in this process: a plain HF model, or a PEFT model for LoRA.

    Raises:
        CheckpointError: incomplete checkpoint, missing base model, or weights that do not fit.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    ckpt = Path(ckpt)
    if not (ckpt / "dcp").is_dir():  # written before DCP: already a Hugging Face folder
        return AutoModelForCausalLM.from_pretrained(ckpt, local_files_only=True)
    if (ckpt / ADAPTER_CONFIG).is_file():
        model = _load_base(ckpt, base_model)
    else:
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(ckpt, local_files_only=True))
    load_checkpoint(ckpt, model)
    return model


def export_checkpoint(ckpt: str | Path, out: str | Path, *, adapter_only: bool = False,
                      base_model: str | None = None) -> Path:
    """Write checkpoint ``ckpt`` as a Hugging Face folder ``out`` (created; must be new or empty).

    Args:
        ckpt: a ``checkpoints/step_XXXXXX`` folder.
        out: the folder to write.
        adapter_only: LoRA checkpoints: write the PEFT adapter only (no merge).
        base_model: LoRA: the base model folder, when the run's ``model.path`` moved.

    Returns:
        ``out``.

    Raises:
        CheckpointError: see :func:`load_checkpoint_model`; ``out`` not empty; ``adapter_only`` without LoRA.
    """
    from transformers import AutoTokenizer

    ckpt, out = Path(ckpt), Path(out)
    _check_paths(ckpt, out)
    lora = (ckpt / ADAPTER_CONFIG).is_file()
    if adapter_only and not lora:
        raise CheckpointError(f"{ckpt} is a full fine-tune (no {ADAPTER_CONFIG}); --adapter-only needs a LoRA run")
    model = load_checkpoint_model(ckpt, base_model)
    if lora and not adapter_only:
        model = model.merge_and_unload()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(ckpt, local_files_only=True).save_pretrained(out)
    logger.info("exported %s to %s (%s)", ckpt, out,
                "LoRA adapter" if adapter_only else "merged LoRA weights" if lora else "full weights")
    return out
