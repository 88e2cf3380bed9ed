"""The built-in verifiable document world (issue 5): fictional companies, people, places and events.

``build_world`` writes a label-free training corpus (``train.jsonl``), a held-out labelled question set
(``heldout.jsonl``, generic eval format), the facts (``world.json``) and a ``manifest.json``; the CLI is
``spell world build``. Stdlib only at import (pyarrow is imported lazily for ``--format parquet``).
"""

from spell.builtin.world.build import WorldPaths, add_world_arguments, build_world, run_world_build
from spell.builtin.world.filler import approx_tokens

__all__ = ["WorldPaths", "add_world_arguments", "approx_tokens", "build_world", "run_world_build"]
