"""Token counts of documents, for the per-set token budget (``--max-set-tokens``).

With ``--tokenizer PATH`` the count is exact: ``len(tokenizer(text, add_special_tokens=False).input_ids)`` from
``transformers.AutoTokenizer.from_pretrained(PATH)`` (a local folder, nothing is downloaded). Without it,
:func:`estimate_tokens` = max(ceil(characters / 4), whitespace-separated words): about 4 characters per token
is what BPE tokenizers such as Qwen2.5's give on English prose, and the word floor covers number- and
symbol-dense text, where tokens are shorter. Pass the model's tokenizer when the budget is tight.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from spell.corpus.options import DataBuildError

CHARS_PER_TOKEN = 4


def estimate_tokens(text: str) -> int:
    """A tokenizer-free token estimate.

    >>> estimate_tokens("one two three")  # ceil(13 / 4) = 4 > 3 words
    4
    >>> estimate_tokens("1 2 3 4 5 6 7")  # ceil(13 / 4) = 4 < 7 words
    7
    """
    return max(math.ceil(len(text) / CHARS_PER_TOKEN), len(text.split()))


def token_counter(tokenizer_path: str | None) -> Callable[[str], int]:
    """The counting function: the tokenizer's when a path is given, else :func:`estimate_tokens`.

    Raises:
        DataBuildError: the folder holds no loadable tokenizer.
    """
    if tokenizer_path is None:
        return estimate_tokens
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
    except (OSError, ValueError) as err:
        raise DataBuildError(f"--tokenizer {tokenizer_path}: cannot load a tokenizer ({str(err).splitlines()[0]}). "
                             "Fix: pass the model folder that holds tokenizer.json / tokenizer_config.json") from None

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])

    return count
