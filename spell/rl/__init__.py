"""Generic on-policy RL machinery, independent of SPELL's semantics.

Generation engines, the trainable policy (loading, LoRA, FSDP2 sharding, temperature-scaled chunked log-probs),
the clipped GRPO loss, torch.distributed helpers, checkpoints and run metrics. Nothing here imports the
self-play roles, rewards, memory or the built-in world (``tests/unit/test_import_boundaries.py`` checks it);
it may import :mod:`spell.types` and :mod:`spell.config`, the shared vocabulary.
"""
