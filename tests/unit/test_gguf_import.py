"""Tests for spell/rl/gguf_import.py: where the GGUF file is found and the one-line errors, without reading one
(the real import of SmolLM2's GGUF runs in tests/integration/test_vllm_cpu.py)."""

from __future__ import annotations

import sys

import pytest

from spell.cli import main
from spell.rl.gguf_import import GGUFImportError, import_gguf, resolve_gguf


@pytest.fixture()
def package(tmp_path, monkeypatch):
    """An installed package ``fake_gguf_pkg`` (on sys.path) holding one .gguf file."""
    folder = tmp_path / "site" / "fake_gguf_pkg"
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text("raise ImportError('never imported')\n")
    (folder / "Model.Q4.gguf").write_bytes(b"GGUF")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    return folder


def test_a_gguf_path_is_taken_as_it_is(tmp_path):
    path = tmp_path / "m.gguf"
    path.write_bytes(b"GGUF")
    assert resolve_gguf(str(path)) == path


def test_a_package_is_located_without_being_imported(package):
    assert resolve_gguf("fake_gguf_pkg") == package / "Model.Q4.gguf"
    assert "fake_gguf_pkg" not in sys.modules  # its __init__ would raise


def test_a_package_with_two_gguf_files_asks_for_the_path(package):
    (package / "Other.gguf").write_bytes(b"GGUF")
    with pytest.raises(GGUFImportError, match="holds 2 .gguf files"):
        resolve_gguf("fake_gguf_pkg")


@pytest.mark.parametrize("source", ["missing.gguf", "no_such_package_here", "not/a package"])
def test_unknown_sources_name_the_fix(source):
    with pytest.raises(GGUFImportError, match="Fix:"):
        resolve_gguf(source)


def test_a_non_empty_out_folder_is_refused_before_reading(tmp_path, package):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("another run's file")
    with pytest.raises(GGUFImportError, match="not an empty folder"):
        import_gguf("fake_gguf_pkg", out)
    assert (out / "keep.txt").read_text() == "another run's file"


def test_the_cli_reports_one_line_and_exits_2(tmp_path, capsys):
    assert main(["model", "import-gguf", str(tmp_path / "missing.gguf"), "--out", str(tmp_path / "o")]) == 2
    assert not (tmp_path / "o").exists()
