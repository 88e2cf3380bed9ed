"""Prompt templates for the three roles (spec §1, §2.3-2.5): loading, checking and filling them.

The built-in templates are packaged ``.txt`` files in ``spell/prompts/templates/``; a user folder
(``questioner.template_dir``) may override any of them by file name. Rendering lives in
``questioner.py``, ``responder.py`` and ``verifier.py``. Stdlib + ``spell.types`` only.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, fields
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from spell.types import TaskType

logger = logging.getLogger(__name__)

DOCUMENT_SEPARATOR = "\n\n"
# Deviation: spec §2.3 - the authors join documents with "\n"; a blank line keeps document boundaries visible.

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")

# Required placeholders per template file (the file name is the key plus ".txt").
TEMPLATE_PLACEHOLDERS: dict[str, frozenset[str]] = {
    "questioner_docmath_qa": frozenset({"documents"}),
    "questioner_docmath_qa_history": frozenset({"documents", "examples"}),
    "questioner_doc_general_qa": frozenset({"documents"}),
    "questioner_doc_general_qa_history": frozenset({"documents", "examples"}),
    "questioner_doc_mc": frozenset({"documents", "target_letter"}),
    "questioner_doc_mc_history": frozenset({"documents", "examples", "target_letter"}),
    "responder_docmath_qa": frozenset({"context", "question"}),
    "responder_doc_general_qa": frozenset({"context", "question"}),
    "responder_doc_mc": frozenset({"context", "question"}),
    "verifier": frozenset({"question", "predicted", "reference"}),
}


@dataclass(frozen=True, slots=True)
class Templates:
    """The raw template strings, one per role x task (field name = template file name without ``.txt``).

    Placeholders are ``{name}`` (see ``TEMPLATE_PLACEHOLDERS``). In the ``doc_mc`` questioner templates,
    the line(s) holding ``{target_letter}`` are dropped when no target letter is drawn.
    """

    questioner_docmath_qa: str
    questioner_docmath_qa_history: str
    questioner_doc_general_qa: str
    questioner_doc_general_qa_history: str
    questioner_doc_mc: str
    questioner_doc_mc_history: str
    responder_docmath_qa: str
    responder_doc_general_qa: str
    responder_doc_mc: str
    verifier: str

    def questioner(self, task: TaskType | str, *, history: bool) -> str:
        """The questioner template of ``task``: the plain one or the "with history" one."""
        suffix = "_history" if history else ""
        return getattr(self, f"questioner_{TaskType(task).value}{suffix}")

    def responder(self, task: TaskType | str) -> str:
        """The responder template of ``task``."""
        return getattr(self, f"responder_{TaskType(task).value}")


def fill(template: str, **values: object) -> str:
    """Replace each ``{name}`` whose name is in ``values`` by ``str(value)``, in one pass.

    Inserted text is never scanned again, so documents holding braces or ``{question}`` are safe;
    ``{...}`` with other names (or JSON such as ``{"a": 1}``) is left untouched.

    Args:
        template: text with ``{name}`` placeholders.
        **values: the replacement for each placeholder name.

    Returns:
        The filled text.

    Example:
        >>> fill("Q: {question} {other}", question="{other}?")
        'Q: {other}? {other}'
    """

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        return str(values[name]) if name in values else match.group(0)

    return _PLACEHOLDER.sub(substitute, template)


def join_documents(documents: Sequence[str]) -> str:
    """Join documents (already in index order) into one text block, separated by a blank line."""
    return DOCUMENT_SEPARATOR.join(documents)


def placeholders(template: str) -> set[str]:
    """The ``{name}`` placeholder names that occur in ``template``."""
    return set(_PLACEHOLDER.findall(template))


def load_templates(template_dir: str | os.PathLike[str] | None = None) -> Templates:
    """The built-in templates, with any files found in ``template_dir`` overriding them by name.

    Args:
        template_dir: a folder of ``<template name>.txt`` files (e.g. ``questioner_doc_mc.txt``), or None
            for the built-in set. Hidden files and sub-folders are ignored.

    Returns:
        The templates.

    Raises:
        FileNotFoundError: ``template_dir`` does not exist.
        ValueError: a file has an unknown name or cannot be decoded as UTF-8, or a template lacks a
            required placeholder (the message names the file and the placeholder).
    """
    if template_dir is None:
        return _builtin_templates()
    folder = Path(template_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"questioner.template_dir {str(folder)!r} is not an existing folder")
    texts = dict(_builtin_texts())
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        name = path.name.removesuffix(".txt")
        if not path.name.endswith(".txt") or name not in TEMPLATE_PLACEHOLDERS:
            known = ", ".join(f"{key}.txt" for key in TEMPLATE_PLACEHOLDERS)
            raise ValueError(f"unknown prompt template file {str(path)!r}; expected one of: {known}")
        texts[name] = _read_template(path, name, str(path))
        logger.info("prompt template %s overridden by %s", name, path)
    return Templates(**texts)


@functools.cache
def _builtin_templates() -> Templates:
    return Templates(**_builtin_texts())


@functools.cache
def _builtin_texts() -> dict[str, str]:
    folder = resources.files(__name__).joinpath("templates")
    names = [field.name for field in fields(Templates)]
    return {name: _read_template(folder.joinpath(f"{name}.txt"), name, f"built-in {name}.txt") for name in names}


def _read_template(path: Traversable, name: str, source: str) -> str:
    """Read the template ``name`` from ``path`` and check that its required placeholders are present."""
    try:
        text = path.read_text(encoding="utf-8").rstrip()
    except UnicodeDecodeError as error:
        raise ValueError(f"prompt template {source!r} is not valid UTF-8: {error}") from error
    found = placeholders(text)
    missing = sorted(TEMPLATE_PLACEHOLDERS[name] - found)
    if missing:
        wanted = ", ".join("{" + key + "}" for key in missing)
        raise ValueError(f"prompt template {source!r} is missing required placeholder(s) {wanted}")
    unknown = sorted(found - TEMPLATE_PLACEHOLDERS[name])
    if unknown:
        logger.warning("prompt template %s has unknown placeholder(s) %s; they stay as written", source, unknown)
    return text
