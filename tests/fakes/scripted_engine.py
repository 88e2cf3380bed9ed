"""FakeScriptedEngine: a test double of the Engine protocol that answers from scripts, not a model.

It decodes each prompt with the REAL tokenizer, decides which role it is for from the rendered template,
and returns the scripted text tokenised with the same tokenizer, so the rest of the pipeline (parsing,
rewards, batching, log-probs) runs on real token ids. Used only by orchestration tests.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from spell.types import Completion, SamplingParams

# script(role, prompt_text, sample_index) -> completion text
Script = Callable[[str, str, int], str]


def detect_role(prompt_text: str) -> str:
    if "Decide whether two answers" in prompt_text:
        return "verifier"
    if "<text>\nEmpty\n</text>" in prompt_text:
        return "grounding"
    if "```json" in prompt_text:
        return "questioner"
    return "responder"


class FakeScriptedEngine:
    def __init__(self, tokenizer, script: Script) -> None:
        self.tokenizer = tokenizer
        self.script = script
        self.calls: list[tuple[str, int, int]] = []  # (role, num_prompts, n)
        self.temperatures: list[tuple[str, float]] = []  # (role, sampling temperature) per prompt
        self.synced = 0

    def generate(
        self, prompts: Sequence[Sequence[int]], sampling: SamplingParams, n: int = 1
    ) -> list[list[Completion]]:
        out = []
        for prompt in prompts:
            text = self.tokenizer.decode(list(prompt))
            role = detect_role(text)
            group = []
            for i in range(n):
                reply = self.script(role, text, i)
                ids = self.tokenizer(reply, add_special_tokens=False)["input_ids"][: sampling.max_new_tokens]
                ids = ids + [self.tokenizer.convert_tokens_to_ids("<|im_end|>")]
                # a made-up sampling log-prob per token (position / -10), so tests can follow them into samples
                logprobs = tuple(-(k + 1) / 10 for k in range(len(ids)))
                group.append(Completion(reply, tuple(ids), tuple(prompt), "stop", logprobs))
            out.append(group)
            self.calls.append((role, 1, n))
            self.temperatures.append((role, sampling.temperature))
        return out

    def sync_weights(self, model) -> None:
        self.synced += 1
