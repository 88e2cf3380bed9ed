"""The LLM judge against a fake OpenAI-compatible server on 127.0.0.1: verdicts, retries, timeouts,
malformed replies, the API key from an environment variable, and the on-disk verdict cache.

Run: .venv/bin/python -m pytest tests/unit/test_eval_judge.py -q
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from spell.evaluate.judge import (
    JudgeConfigError,
    JudgeRequest,
    LLMJudge,
    chat_completions_url,
    extract_reply_text,
    render_judge_prompt,
)
from spell.types import Verdict


class FakeChatServer:
    """Answers [[YES]] when the prompt's predicted answer is "good", else [[NO]]; ``mode`` injects faults."""

    def __init__(self) -> None:
        self.mode = "ok"  # ok | slow | malformed | fail_once | always_500 | bad_request
        self.hits = 0
        self.auth_headers: list[str | None] = []
        self.bodies: list[dict] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output quiet
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.hits += 1
                    hit = server.hits
                    server.auth_headers.append(self.headers.get("Authorization"))
                    server.bodies.append(body)
                mode = server.mode
                if mode == "slow":
                    time.sleep(0.5)
                if mode == "always_500" or (mode == "fail_once" and hit == 1):
                    self.send_response(500)
                    self.end_headers()
                    return
                if mode == "bad_request":
                    self.send_response(400)
                    self.end_headers()
                    return
                prompt = body["messages"][0]["content"]
                decision = "[[YES]]" if "Predicted answer: good" in prompt else "[[NO]]"
                reply = {"choices": [{"message": {"role": "assistant", "content": f"Checked. {decision}"}}]}
                payload = b"<html>oops</html>" if mode == "malformed" else json.dumps(reply).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):  # the client timed out first
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[FakeChatServer]:
    fake = FakeChatServer()
    yield fake
    fake.close()


def _judge(server: FakeChatServer, **kwargs) -> LLMJudge:
    options = {"timeout_s": 2.0, "concurrency": 4, "max_retries": 2, "backoff_s": 0.01} | kwargs
    return LLMJudge(server.url, "judge-model", **options)


GOOD = JudgeRequest("Where is Tartu?", "good", "Estonia")
BAD = JudgeRequest("Where is Tartu?", "bad", "Estonia")


def test_verdicts_come_back_in_request_order(server):
    judge = _judge(server)
    verdicts = judge.judge([GOOD, BAD, JudgeRequest("q2", "good", "g2")])
    assert verdicts == [Verdict.YES, Verdict.NO, Verdict.YES]
    assert server.hits == 3 and judge.stats.http_calls == 3
    body = server.bodies[0]
    assert body["model"] == "judge-model" and body["temperature"] == 0.0 and body["top_p"] == 1.0


def test_identical_requests_are_sent_once(server):
    judge = _judge(server)
    assert judge.judge([GOOD, GOOD, GOOD]) == [Verdict.YES] * 3
    assert server.hits == 1


def test_many_requests_run_concurrently_and_all_answer(server):
    judge = _judge(server, concurrency=8)
    requests = [JudgeRequest(f"q{i}", "good" if i % 2 else "bad", "g") for i in range(16)]
    verdicts = judge.judge(requests)
    assert verdicts == [Verdict.YES if i % 2 else Verdict.NO for i in range(16)]
    assert server.hits == 16


def test_timeout_retries_then_gives_invalid_without_raising(server):
    server.mode = "slow"  # the server sleeps 0.5 s, the client waits 0.1 s
    judge = _judge(server, timeout_s=0.1, max_retries=1)
    assert judge.judge([GOOD]) == [Verdict.INVALID]
    assert judge.stats.http_calls == 2 and judge.stats.errors == 1  # first try + 1 retry, then given up


def test_server_error_is_retried_with_backoff(server):
    server.mode = "fail_once"  # HTTP 500 on the first call, fine afterwards
    judge = _judge(server)
    assert judge.judge([GOOD]) == [Verdict.YES]
    assert judge.stats.http_calls == 2 and judge.stats.errors == 0


def test_persistent_server_errors_give_invalid(server):
    server.mode = "always_500"
    judge = _judge(server, max_retries=2)
    assert judge.judge([GOOD]) == [Verdict.INVALID]
    assert server.hits == 3 and judge.stats.errors == 1  # 1 + 2 retries


def test_client_error_is_not_retried(server):
    server.mode = "bad_request"  # HTTP 400: asking again will not help
    judge = _judge(server, max_retries=3)
    assert judge.judge([GOOD]) == [Verdict.INVALID]
    assert server.hits == 1


def test_malformed_reply_is_invalid_and_counted(server):
    server.mode = "malformed"
    judge = _judge(server)
    assert judge.judge([GOOD, BAD]) == [Verdict.INVALID, Verdict.INVALID]
    assert judge.stats.invalid == 2 and server.hits == 2  # not retried


def test_unreachable_endpoint_gives_invalid(server):
    url = server.url
    server.close()
    judge = LLMJudge(url, "m", timeout_s=0.5, max_retries=1, backoff_s=0.01)
    assert judge.judge([GOOD]) == [Verdict.INVALID] and judge.stats.errors == 1


def test_api_key_is_read_from_the_named_environment_variable(server, monkeypatch):
    monkeypatch.setenv("MY_JUDGE_KEY", "s3cret")
    judge = _judge(server, api_key_env="MY_JUDGE_KEY")
    judge.judge([GOOD])
    assert server.auth_headers == ["Bearer s3cret"]


def test_no_key_env_sends_no_authorization(server):
    _judge(server).judge([GOOD])
    assert server.auth_headers == [None]


def test_unset_key_variable_fails_at_setup(server, monkeypatch):
    monkeypatch.delenv("MISSING_JUDGE_KEY", raising=False)
    with pytest.raises(JudgeConfigError, match="MISSING_JUDGE_KEY"):
        _judge(server, api_key_env="MISSING_JUDGE_KEY")


def test_cache_on_disk_makes_a_rerun_free(server, tmp_path):
    cache = tmp_path / "judge_cache.jsonl"
    first = _judge(server, cache_path=cache)
    assert first.judge([GOOD, BAD]) == [Verdict.YES, Verdict.NO]
    assert server.hits == 2
    second = _judge(server, cache_path=cache)  # a new process reading the same output dir
    assert second.judge([BAD, GOOD]) == [Verdict.NO, Verdict.YES]
    assert server.hits == 2 and second.stats.cache_hits == 2 and second.stats.http_calls == 0


def test_cache_is_keyed_by_model(server, tmp_path):
    cache = tmp_path / "judge_cache.jsonl"
    _judge(server, cache_path=cache).judge([GOOD])
    LLMJudge(server.url, "another-judge", cache_path=cache, backoff_s=0.01).judge([GOOD])
    assert server.hits == 2  # a different judge model is asked again


def test_invalid_verdicts_are_not_cached(server, tmp_path):
    cache = tmp_path / "judge_cache.jsonl"
    server.mode = "malformed"
    _judge(server, cache_path=cache).judge([GOOD])
    server.mode = "ok"
    assert _judge(server, cache_path=cache).judge([GOOD]) == [Verdict.YES]  # asked again, now answered
    assert server.hits == 2


def test_torn_cache_line_is_ignored(server, tmp_path):
    cache = tmp_path / "judge_cache.jsonl"
    cache.write_text('{"key": "abc", "verd')  # a crash mid-write
    assert _judge(server, cache_path=cache).judge([GOOD]) == [Verdict.YES]


def test_prompt_substitution_is_single_pass():
    prompt = render_judge_prompt(JudgeRequest("What is {gold}?", "{question}", "42"))
    assert "Question: What is {gold}?" in prompt and "Predicted answer: {question}" in prompt
    assert "Ground-truth answer: 42" in prompt and "[[YES]]" in prompt


@pytest.mark.parametrize(
    "url, expected",
    [
        ("http://h:8000/v1", "http://h:8000/v1/chat/completions"),
        ("http://h:8000/v1/chat/completions", "http://h:8000/v1/chat/completions"),  # already complete
    ],
)
def test_chat_completions_url(url, expected):
    assert chat_completions_url(url) == expected


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"{}",  # no choices
        b'{"choices": []}',  # empty choices
        b'{"choices": [{"message": {"content": null}}]}',  # content null (e.g. only reasoning came back)
        b"\xff\xfe",  # not UTF-8
    ],
)
def test_extract_reply_text_malformed_is_none(body):
    assert extract_reply_text(body) is None
