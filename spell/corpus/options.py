"""The settings of ``spell data build`` and its error type.

Defaults follow the paper's corpus recipe (App. E.1, spec §2.1): 100-32,768 characters per document, MinHash
LSH at Jaccard 0.8 with 128 permutations, clusters of about 20 documents that fit a 16K-token prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class DataBuildError(ValueError):
    """Unreadable input or a bad ``spell data build`` option: one line naming the file:line (or flag) and the fix."""


# The responder prompt holds every document of a set plus the template and the question; 1,024 tokens are
# left for those out of the paper's 16K prompt (data.max_prompt_tokens = 16384).
DEFAULT_MAX_SET_TOKENS = 16384 - 1024


@dataclass(frozen=True, slots=True)
class BuildOptions:
    """Everything one ``spell data build`` run needs.

    Attributes:
        inputs: folders (``.txt``/``.md``/``.jsonl``/``.parquet`` files below them) and files to read.
        out: the output folder (created atomically).
        seed: seeds the SVD, k-means and the task assignment; the same seed gives the same bytes.
        text_key: the text field of JSONL rows and the text column of Parquet files.
        min_chars / max_chars: documents outside this length (characters, stripped) are dropped (paper 100-32,768).
        dedup_threshold: Jaccard similarity of word shingles at or above which two documents are
            near-duplicates (paper 0.8).
        num_perm: MinHash permutations (paper 128).
        shingle_words: words per shingle for MinHash (not stated in the paper).
        exclude: benchmark files (or folders of them) in the formats ``spell eval`` reads; training documents that
            copy them are dropped.
        exclude_span_words: a training document sharing a verbatim run of this many words with a benchmark
            document is contaminated, whatever their overall similarity.
        set_size: the target number of documents per set (paper: about 20).
        min_set_size: smaller clusters are merged into their nearest neighbour, or dropped.
        max_set_size: larger clusters are split again; 0 = 2 x ``set_size``.
        max_set_tokens: the token budget of one set (all its documents); a document alone above it is dropped.
        tokenizer: a local tokenizer folder to count tokens with; None = the estimate in :mod:`spell.corpus.tokens`.
        embed_model: a local Hugging Face model folder whose mean-pooled hidden states replace TF-IDF features.
        docmath: give number- and table-heavy sets the ``docmath_qa`` task.
        id_prefix: document-set ids are ``{id_prefix}-{n:06d}``; None = the output folder's name.
        overwrite: move an existing non-empty output folder aside (never deleted) instead of refusing.
    """

    inputs: tuple[str, ...]
    out: str
    seed: int = 0
    text_key: str = "text"
    min_chars: int = 100
    max_chars: int = 32768
    dedup_threshold: float = 0.8
    num_perm: int = 128
    shingle_words: int = 5
    exclude: tuple[str, ...] = ()
    exclude_span_words: int = 50
    set_size: int = 20
    min_set_size: int = 6
    max_set_size: int = 0
    max_set_tokens: int = DEFAULT_MAX_SET_TOKENS
    tokenizer: str | None = None
    embed_model: str | None = None
    docmath: bool = False
    id_prefix: str | None = None
    overwrite: bool = False

    def __post_init__(self) -> None:
        for message in _problems(self):
            raise DataBuildError(message)

    @property
    def set_size_limit(self) -> int:
        """The largest number of documents in one set."""
        return self.max_set_size or 2 * self.set_size

    @property
    def docset_id_prefix(self) -> str:
        return self.id_prefix or Path(self.out).resolve().name


def _problems(options: BuildOptions) -> list[str]:
    """Every option problem as ``--flag=value: problem. Fix: ...`` (the first one is raised)."""
    problems = []
    if not options.inputs:
        problems.append("no INPUT given. Fix: pass folders of .txt/.md files, .jsonl or .parquet files")
    if not 0 <= options.min_chars < options.max_chars:
        problems.append(f"--min-chars={options.min_chars} --max-chars={options.max_chars}: need 0 <= min < max. "
                        "Fix: e.g. the paper's --min-chars 100 --max-chars 32768")
    if not 0.0 < options.dedup_threshold <= 1.0:
        problems.append(f"--dedup-threshold={options.dedup_threshold}: must be in (0, 1]. Fix: the paper uses 0.8")
    if not 16 <= options.num_perm <= 1024:
        problems.append(f"--num-perm={options.num_perm}: must be 16..1024. Fix: the paper uses 128")
    if options.shingle_words < 1:
        problems.append(f"--shingle-words={options.shingle_words}: must be >= 1. Fix: e.g. 5")
    if options.exclude_span_words < 2:
        problems.append(f"--exclude-span-words={options.exclude_span_words}: must be >= 2. Fix: e.g. 50")
    if not 1 <= options.min_set_size <= options.set_size <= options.set_size_limit:
        problems.append(f"--min-set-size={options.min_set_size} --set-size={options.set_size} --max-set-size="
                        f"{options.set_size_limit}: need 1 <= min <= target <= max. Fix: e.g. 6, 20, 40")
    if options.max_set_tokens < 1:
        problems.append(f"--max-set-tokens={options.max_set_tokens}: must be positive. Fix: e.g. 15360")
    for flag, path in (("--tokenizer", options.tokenizer), ("--embed-model", options.embed_model)):
        if path is not None and not Path(path).is_dir():
            problems.append(f"{flag} {path}: not a folder. Fix: pass a local Hugging Face folder "
                            "(save_pretrained output); nothing is downloaded")
    if options.embed_model is not None and not (Path(options.embed_model) / "config.json").is_file():
        problems.append(f"--embed-model {options.embed_model}: no config.json there. Fix: pass a Hugging Face model "
                        "folder (save_pretrained output)")
    return problems
