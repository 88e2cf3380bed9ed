"""The text-only modules must stay light (STYLE §3.2): importing them never pulls in torch & co.

Each module is imported in a fresh interpreter, then its ``sys.modules`` is checked.
Run: .venv/bin/python -m pytest tests/unit/test_import_boundaries.py
"""

import json
import subprocess
import sys

import pytest

TEXT_ONLY_MODULES = [
    "spell.types",
    "spell.prompts",
    "spell.prompts.questioner",
    "spell.prompts.responder",
    "spell.prompts.verifier",
    "spell.parsing",
    "spell.tasks",
    "spell.tasks.arith",
    "spell.tasks.docmath",
    "spell.tasks.doc_general_qa",
    "spell.tasks.doc_mc",
    "spell.rewards",
    "spell.sampling",
    "spell.advantages",
    "spell.memory",
]

# Heavy or configuration-layer modules the pure core must not import (brief: stdlib + spell.types only).
FORBIDDEN = ["torch", "transformers", "numpy", "vllm", "omegaconf", "spell.config"]

_PROBE = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
print(json.dumps(sorted(name for name in sys.argv[2:] if name in sys.modules)))
"""


def _heavy_modules_loaded_by(module: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, module, *FORBIDDEN], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, f"importing {module} failed:\n{result.stderr}"
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("module", TEXT_ONLY_MODULES)
def test_text_only_module_imports_no_heavy_dependency(module):
    assert _heavy_modules_loaded_by(module) == []


def test_probe_detects_a_heavy_import():
    # the check can fail: a module that imports numpy is reported
    assert _heavy_modules_loaded_by("numpy") == ["numpy"]
