"""The generation engine protocol: token-id prompts in, n completions per prompt out.

Every role's prompt is rendered as text (``spell.prompts``), wrapped in the model's chat template and
tokenised once by :func:`encode_chat_prompt`; engines only ever see token ids. That keeps prompt-length
checks (``data.max_prompt_tokens``) exact and lets HF and vLLM backends share one contract.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from spell.types import Completion, SamplingParams


@runtime_checkable
class Engine(Protocol):
    """A text generator for all three roles.

    ``generate`` returns one list per prompt, each with exactly ``n`` completions, in prompt order.
    ``sync_weights`` makes the engine sample from ``model``'s current parameters (on-policy).
    """

    tokenizer: Any

    def generate(
        self, prompts: Sequence[Sequence[int]], sampling: SamplingParams, n: int = 1
    ) -> list[list[Completion]]: ...

    def sync_weights(self, model: Any) -> None: ...


def encode_chat_prompt(tokenizer: Any, user_text: str) -> list[int]:
    """Token ids of ``user_text`` as one user turn plus the assistant generation prompt.

    Uses the tokenizer's chat template when it has one, else the plain text (base models).
    """
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": user_text}], add_generation_prompt=True, tokenize=True
        )
        if isinstance(ids, dict) or hasattr(ids, "keys"):  # transformers >= 5 may return a BatchEncoding
            ids = ids["input_ids"]
        return list(ids)
    return list(tokenizer(user_text, add_special_tokens=True)["input_ids"])
