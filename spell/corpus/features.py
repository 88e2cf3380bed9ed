"""Document vectors for clustering (paper App. E.1 step 3 embeds with Qwen3-Embedding-8B).

Default, offline and model-free: TF-IDF of hashed word counts (scikit-learn ``HashingVectorizer``, 2^18
features, English stop words removed, sublinear tf), reduced to :data:`SVD_DIMS` dimensions by a seeded
truncated SVD (latent semantic analysis) and L2-normalised, so k-means on them clusters by cosine similarity.
``--embed-model PATH``: the mean of a local Hugging Face model's last hidden states over each document's first
:data:`EMBED_MAX_TOKENS` tokens, L2-normalised. Both read the texts as a stream; the result is dense
``[N, D]`` float32 (N documents, D dimensions).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator

import numpy as np

from spell.corpus.options import DataBuildError

logger = logging.getLogger(__name__)

HASHED_FEATURES = 2**18
SVD_DIMS = 128
EMBED_MAX_TOKENS = 512
EMBED_BATCH = 16


def tfidf_vectors(texts: Iterable[str], num_docs: int, seed: int) -> np.ndarray:
    """LSA vectors of ``num_docs`` texts. Shape: ``[num_docs, D]``, D = min(SVD_DIMS, num_docs - 1), at least 1."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer
    from sklearn.preprocessing import normalize

    # Deviation: paper_map #45 - TF-IDF + SVD by default instead of Qwen3-Embedding-8B (offline, no model needed).
    if num_docs < 2:  # nothing to compare: one constant dimension
        return np.ones((num_docs, 1), dtype=np.float32)
    hashing = HashingVectorizer(n_features=HASHED_FEATURES, alternate_sign=False, norm=None,
                                stop_words="english", dtype=np.float32)
    counts = hashing.transform(texts)  # sparse [N, 2^18]
    weights = TfidfTransformer(sublinear_tf=True).fit_transform(counts).tocsc()
    weights = weights[:, np.flatnonzero(np.diff(weights.indptr))].tocsr()  # only the hashed terms that occur
    dims = min(SVD_DIMS, num_docs - 1, weights.shape[1] - 1)
    if dims < 1:  # at most one distinct term (stop words only): nothing to tell the documents apart by
        return np.ones((num_docs, 1), dtype=np.float32)
    reduced = TruncatedSVD(n_components=dims, random_state=seed).fit_transform(weights)
    return normalize(reduced).astype(np.float32)


def model_vectors(texts: Iterable[str], num_docs: int, model_path: str) -> np.ndarray:
    """Mean-pooled, L2-normalised hidden states of a local model. Shape: ``[num_docs, hidden_size]``.

    Raises:
        DataBuildError: the folder holds no loadable model or tokenizer.
    """
    import torch

    tokenizer, model = _load_embedder(model_path)
    rows = []
    with torch.inference_mode():
        for batch in _batches(texts, EMBED_BATCH):
            encoded = tokenizer(batch, padding=True, truncation=True, max_length=EMBED_MAX_TOKENS,
                                return_tensors="pt")
            hidden = model(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"]).last_hidden_state
            mask = encoded["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # [B, T, 1]
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)  # [B, H]
            rows.append(torch.nn.functional.normalize(pooled.float(), dim=-1).numpy())
    vectors = np.concatenate(rows) if rows else np.zeros((0, 1), dtype=np.float32)
    assert len(vectors) == num_docs, f"embedded {len(vectors)} of {num_docs} documents"
    return vectors.astype(np.float32)


def _load_embedder(model_path: str):
    from transformers import AutoModel, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(model_path)
        model = AutoModel.from_pretrained(model_path).eval()
    except (OSError, ValueError) as err:
        raise DataBuildError(f"--embed-model {model_path}: cannot load ({str(err).splitlines()[0]}). Fix: pass a "
                             "Hugging Face model folder with its tokenizer (save_pretrained output)") from None
    if tokenizer.pad_token is None:  # decoder-only tokenizers often have none; padded positions are masked out
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    if tokenizer.pad_token is None:
        raise DataBuildError(f"--embed-model {model_path}: the tokenizer has no pad, eos or unk token to pad "
                             "batches with. Fix: set pad_token in its tokenizer_config.json")
    return tokenizer, model


def _batches(texts: Iterable[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for text in texts:
        batch.append(text)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
