"""Optional LLM judge for QA and DocMath samples through an OpenAI-compatible chat endpoint (spec §9.3).

The judge sees the question, the rule-parsed prediction and the gold answer, and answers [[YES]]/[[NO]]
(parsed with :func:`spell.parsing.parse_verdict`). Requests run concurrently in a thread pool, with a
timeout, retries with exponential backoff on timeouts / connection errors / HTTP 429 and 5xx. The API key
is read only from the environment variable whose name is given. YES/NO verdicts are cached in a JSONL file
keyed by a hash of (model, question, prediction, gold), so re-runs send nothing. A malformed reply or a
request that keeps failing gives ``Verdict.INVALID`` (counted in :class:`JudgeStats`), never an exception.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from spell.parsing import parse_verdict
from spell.prompts import fill
from spell.types import Verdict

logger = logging.getLogger(__name__)

JUDGE_PROMPT = """You are checking an answer to a question about a set of documents.
Decide whether the predicted answer states the meaning and the key facts of the ground-truth answer.
Extra detail in the prediction is fine if it does not contradict the ground truth; different wording,
units or formatting of the same fact count as a match, and numbers that agree after rounding match.

Question: {question}
Ground-truth answer: {gold}
Predicted answer: {prediction}

Explain your reasoning in one or two sentences, then finish with exactly one of [[YES]] or [[NO]]."""

_RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})


class JudgeConfigError(ValueError):
    """The judge cannot be set up (e.g. the API-key environment variable is not set)."""


@dataclass(frozen=True, slots=True)
class JudgeRequest:
    """What the judge is shown for one sample."""

    question: str
    prediction: str
    gold: str


@dataclass(slots=True)
class JudgeStats:
    """Counters for one judge; ``invalid`` = malformed replies, ``errors`` = requests that kept failing."""

    requests: int = 0
    cache_hits: int = 0
    http_calls: int = 0
    invalid: int = 0
    errors: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counters as a plain dict (for logs and results)."""
        return {key: getattr(self, key) for key in self.__slots__}


def cache_key(model: str, request: JudgeRequest) -> str:
    """sha256 of (model, question, prediction, gold): the cache key of one verdict.

    >>> len(cache_key("m", JudgeRequest("q", "p", "g")))
    64
    """
    payload = json.dumps([model, request.question, request.prediction, request.gold], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def render_judge_prompt(request: JudgeRequest) -> str:
    """The judge's user message for ``request`` (single-pass substitution, so braces in answers are safe)."""
    return fill(JUDGE_PROMPT, question=request.question, gold=request.gold, prediction=request.prediction)


def chat_completions_url(url: str) -> str:
    """``url`` with ``/chat/completions`` appended unless it already ends with it.

    >>> chat_completions_url("http://127.0.0.1:8000/v1/")
    'http://127.0.0.1:8000/v1/chat/completions'
    """
    url = url.rstrip("/")
    return url if url.endswith("/chat/completions") else f"{url}/chat/completions"


def extract_reply_text(body: bytes) -> str | None:
    """The first choice's message content of a chat-completions reply, or None when malformed.

    >>> extract_reply_text(b'{"choices": [{"message": {"content": "[[YES]]"}}]}')
    '[[YES]]'
    """
    try:
        content = json.loads(body.decode("utf-8"))["choices"][0]["message"]["content"]
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, IndexError, TypeError):
        return None
    return content if isinstance(content, str) else None


class LLMJudge:
    """A judge behind an OpenAI-compatible ``/v1/chat/completions`` endpoint (e.g. a vLLM server).

    Args:
        url: base URL (``http://host:8000/v1``) or the full chat-completions URL.
        model: the served model name.
        api_key_env: NAME of the environment variable holding the API key (None = no key).
        timeout_s: per-request timeout in seconds.
        concurrency: parallel requests.
        max_retries: retries after the first attempt on timeouts, connection errors, 429 and 5xx.
        backoff_s: first retry delay; doubles each retry.
        max_tokens: judge output limit (paper: 8192 for gpt-oss-120b).
        cache_path: JSONL verdict cache (None = in-memory only).

    Raises:
        JudgeConfigError: ``api_key_env`` is given but the variable is not set.
    """

    def __init__(
        self,
        url: str,
        model: str,
        *,
        api_key_env: str | None = None,
        timeout_s: float = 120.0,
        concurrency: int = 8,
        max_retries: int = 3,
        backoff_s: float = 1.0,
        max_tokens: int = 8192,
        cache_path: str | Path | None = None,
    ) -> None:
        self.url = chat_completions_url(url)
        self.model = model
        self.timeout_s, self.concurrency = timeout_s, max(1, concurrency)
        self.max_retries, self.backoff_s, self.max_tokens = max_retries, backoff_s, max_tokens
        self._api_key = None
        if api_key_env:
            self._api_key = os.environ.get(api_key_env)
            if not self._api_key:
                raise JudgeConfigError(
                    f"--judge-api-key-env {api_key_env}: environment variable is not set; export it or drop the flag"
                )
        self.cache_path = Path(cache_path) if cache_path else None
        self._cache = self._load_cache()
        self._lock = threading.Lock()
        self.stats = JudgeStats()

    def _load_cache(self) -> dict[str, str]:
        cache: dict[str, str] = {}
        if self.cache_path is None or not self.cache_path.is_file():
            return cache
        for line in self.cache_path.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
                cache[entry["key"]] = Verdict(entry["verdict"]).value
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                continue  # a torn last line after a crash: that verdict is simply asked again
        return cache

    def judge(self, requests: Sequence[JudgeRequest]) -> list[Verdict]:
        """Verdicts for ``requests`` (same order): cached ones are free, the rest go out concurrently."""
        keys = [cache_key(self.model, r) for r in requests]
        self.stats.requests += len(requests)
        todo = {key: r for key, r in zip(keys, requests) if key not in self._cache}
        self.stats.cache_hits += len(requests) - sum(1 for key in keys if key in todo)
        fresh: dict[str, Verdict] = {}
        if todo:
            with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
                verdicts = pool.map(self._ask, todo.values())
                fresh = dict(zip(todo, verdicts))
        return [Verdict(self._cache[key]) if key in self._cache else fresh[key] for key in keys]

    def _ask(self, request: JudgeRequest) -> Verdict:
        text = self._post(render_judge_prompt(request))
        if text is None:
            return Verdict.INVALID
        verdict = parse_verdict(text)
        with self._lock:
            if verdict == Verdict.INVALID:
                self.stats.invalid += 1
            else:
                self._remember(cache_key(self.model, request), verdict)
        return verdict

    def _remember(self, key: str, verdict: Verdict) -> None:
        self._cache[key] = verdict.value
        if self.cache_path is not None:
            self.cache_path.parent.mkdir(parents=True, exist_ok=True)
            with self.cache_path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps({"key": key, "verdict": verdict.value}) + "\n")

    def _post(self, prompt: str) -> str | None:
        """Send one chat request with retries; the reply text, or None (counted) if malformed or failing."""
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": 0.0,
            "top_p": 1.0,
            "max_tokens": self.max_tokens,
        }
        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        data = json.dumps(body).encode("utf-8")
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            with self._lock:
                self.stats.http_calls += 1
            request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    reply = response.read()
            except urllib.error.HTTPError as err:
                logger.warning("judge HTTP %s from %s (attempt %d)", err.code, self.url, attempt + 1)
                if err.code not in _RETRY_STATUS:
                    break
                continue
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as err:
                logger.warning("judge request failed: %s (attempt %d)", err, attempt + 1)
                continue
            text = extract_reply_text(reply)
            if text is None:
                with self._lock:
                    self.stats.invalid += 1
                logger.warning("judge reply is not a chat completion: %.120r", reply)
            return text
        with self._lock:
            self.stats.errors += 1
        return None
