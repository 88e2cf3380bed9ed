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


# ---- spell.rl: generic RL machinery that never imports SPELL semantics or the built-in toy ----

RL_MODULES = [
    "spell.rl", "spell.rl.engine", "spell.rl.engine.base", "spell.rl.engine.hf", "spell.rl.engine.vllm",
    "spell.rl.policy", "spell.rl.losses", "spell.rl.distributed", "spell.rl.checkpoint", "spell.rl.metrics",
    "spell.rl.sharding", "spell.rl.export", "spell.rl.shared_prefix", "spell.rl.rundir",
]
# The shared vocabulary spell.rl may use besides the package root: types and the config layer.
RL_MAY_IMPORT = ("spell.types", "spell.config", "spell.rl")

_SPELL_PROBE = """
import importlib, json, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
print(json.dumps(sorted(name for name in sys.modules if name == "spell" or name.startswith("spell."))))
"""


def _spell_modules_loaded_by(*modules: str) -> list[str]:
    result = subprocess.run([sys.executable, "-c", _SPELL_PROBE, *modules], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, f"importing {modules} failed:\n{result.stderr}"
    return json.loads(result.stdout.strip().splitlines()[-1])


def _outside_rl_boundary(names: list[str]) -> list[str]:
    return [n for n in names if n != "spell" and not any(n == ok or n.startswith(ok + ".") for ok in RL_MAY_IMPORT)]


def test_rl_modules_import_no_spell_semantics_or_toy():
    # one interpreter imports every spell.rl module: any import outside the boundary shows in sys.modules
    loaded = _spell_modules_loaded_by(*RL_MODULES)
    assert set(RL_MODULES) <= set(loaded)
    assert _outside_rl_boundary(loaded) == []


def test_rl_boundary_probe_detects_a_semantic_import():
    # the check can fail: the trainer wires SPELL semantics (experience, selfplay, memory) into the RL loop
    outside = _outside_rl_boundary(_spell_modules_loaded_by("spell.trainer"))
    assert "spell.experience" in outside and "spell.memory" in outside


# ---- spell.corpus: `spell data build` needs torch/transformers only for --tokenizer / --embed-model ----

def test_corpus_build_imports_no_torch_or_transformers():
    assert [name for name in _heavy_modules_loaded_by("spell.corpus.build") if name in ("torch", "transformers")] == []


def test_corpus_cli_arguments_import_no_heavy_library():
    # every `spell` command builds the parser, so the `spell data build` arguments must stay stdlib-light
    assert _heavy_modules_loaded_by("spell.corpus.cli") == []
