"""Shared offline fixtures: tiny tokenizer/model built in-process, and the scripted (fake) engine."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tiny models: one thread avoids OpenMP oversubscription on small CPUs (2-core CI), many times faster here.
os.environ.setdefault("OMP_NUM_THREADS", "1")

TINY_TEXTS = [
    "The correct answer is Alpha. Therefore, the answer is 42. Decision: [[YES]] Decision: [[NO]]",
    "Orvan Corp acquired Delta Works in 2019. Mira Tessel is the CEO of Delta Works. Mira was born in Kalo.",
    '```json\n{"question": "Who runs the company that Orvan bought?", "answer": "Mira Tessel"}\n```',
] * 40


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from spell.builtin.tiny import build_tiny_tokenizer

    return build_tiny_tokenizer(TINY_TEXTS, vocab_size=400)


@pytest.fixture()
def tiny_model(tiny_tokenizer):
    from spell.builtin.tiny import build_tiny_model

    return build_tiny_model(tiny_tokenizer, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, seed=0)


@pytest.fixture(scope="session")
def tiny_policy_dir(tmp_path_factory, tiny_tokenizer):
    """A saved tiny policy folder (config.json + safetensors + tokenizer), loadable by from_pretrained."""
    from spell.builtin.tiny import build_tiny_model, save_policy

    path = tmp_path_factory.mktemp("tiny_policy")
    model = build_tiny_model(tiny_tokenizer, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, seed=0)
    save_policy(model, tiny_tokenizer, path)
    return path


@pytest.fixture(scope="session")
def load_benchmark():
    """Import a script of benchmarks/ (not a package) as a module: load_benchmark("learning")."""

    def load(name):
        path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(f"{name}_benchmark", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
