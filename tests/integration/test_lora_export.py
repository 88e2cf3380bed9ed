"""LoRA training end to end and ``spell export``: an adapter trains, checkpoints hold only it, resume restores it,
export merges it into a folder ``transformers`` loads with the same outputs (or writes the adapter alone)."""

from __future__ import annotations

import torch
from torch.distributed.checkpoint import FileSystemReader
from transformers import AutoModelForCausalLM

from spell.cli import main
from spell.rl.checkpoint import latest_checkpoint
from spell.rl.export import export_checkpoint, load_checkpoint_model
from tests.integration.test_trainer import corpus, make_cfg, make_trainer  # noqa: F401 - corpus is a fixture

IDS = torch.tensor([[5, 17, 33, 2, 8, 41, 9]])


def _logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=IDS).logits


def test_lora_run_trains_the_adapter_resumes_and_exports(corpus, tiny_policy_dir, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    trainer = make_trainer(make_cfg(corpus, tiny_policy_dir, run, "train.max_steps=1", "model.lora_rank=8"))
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    changed = {n for n, p in trainer.model.named_parameters() if not torch.equal(before[n], p)}
    assert changed and all(".lora_" in n for n in changed)  # the base is frozen
    assert {n for n, p in trainer.model.named_parameters() if p.requires_grad} >= changed
    ckpt = latest_checkpoint(run)
    stored = FileSystemReader(str(ckpt / "dcp")).read_metadata().state_dict_metadata
    assert stored and all(".lora_" in k for k in stored if k.startswith("model."))  # the adapter only
    assert (ckpt / "adapter_config.json").is_file()

    resumed = make_trainer(make_cfg(corpus, tiny_policy_dir, run, "train.max_steps=2", "model.lora_rank=8"), run)
    assert resumed.start_step == 1
    for (name, p), (_, q) in zip(trainer.model.named_parameters(), resumed.model.named_parameters()):
        assert torch.equal(p, q), name

    merged_dir = export_checkpoint(ckpt, tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(merged_dir)
    assert not any("lora" in n for n, _ in merged.named_parameters())
    trainer.model.eval()
    # merged W + B A * alpha / r equals the adapter applied on the fly, up to fp32 rounding
    torch.testing.assert_close(_logits(merged), _logits(trainer.model), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(_logits(merged), _logits(AutoModelForCausalLM.from_pretrained(tiny_policy_dir)))

    assert main(["export", str(run), "--out", str(tmp_path / "adapter"), "--adapter-only"]) == 0
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    assert not (tmp_path / "adapter" / "model.safetensors").exists()


def test_full_checkpoint_exports_to_a_loadable_folder_and_refuses_to_overwrite(corpus, tiny_policy_dir,  # noqa: F811
                                                                               tmp_path):
    run = tmp_path / "run"
    trainer = make_trainer(make_cfg(corpus, tiny_policy_dir, run, "train.max_steps=1"))
    trainer.train()
    out = tmp_path / "hf"
    assert main(["export", str(latest_checkpoint(run)), "--out", str(out)]) == 0
    exported = AutoModelForCausalLM.from_pretrained(out)
    trainer.model.eval()
    torch.testing.assert_close(_logits(exported), _logits(trainer.model), rtol=0, atol=0)  # the same fp32 weights
    assert torch.equal(_logits(load_checkpoint_model(latest_checkpoint(run))), _logits(exported))
    (out / "keep.txt").write_text("user data")
    assert main(["export", str(run), "--out", str(out)]) == 2  # not empty: refused, nothing overwritten
    assert (out / "keep.txt").read_text() == "user data"
    assert main(["export", str(run), "--out", str(tmp_path / "x"), "--adapter-only"]) == 2  # not a LoRA run

