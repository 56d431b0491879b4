"""LLM clients: a small protocol and its implementation for any OpenAI-compatible chat endpoint.

:class:`OpenAIClient` talks to a server through the ``openai`` package (the project's local llama.cpp
server by default, see :mod:`vlnkit.agents.llm.server`) and adds what an agent that asks once per step
needs:

- a timeout per request, and retries with exponential backoff after transport failures (connection
  refused or reset, timeouts, HTTP 429 and 5xx); other HTTP errors are not retried;
- schema-constrained answers: the JSON schema goes out as an OpenAI ``response_format`` (llama.cpp turns
  it into a decoding grammar), and the caller's ``validate`` checks the answer; an invalid answer is asked
  again ``invalid_retries`` times at ``retry_temperature`` (a repeat at temperature 0 would return the
  same answer);
- a cache of identical requests (the full request body: model, messages, schema, sampling settings), in
  memory and optionally on disk, holding only answers that passed validation, so a repeated prompt makes
  no request;
- ranking instead of answering (:meth:`OpenAIClient.rank`): the log-likelihood of each of a few given
  answers, read from the ``/v1/completions`` endpoint's top ``logprobs`` of the next token, one token at a
  time (the only likelihoods an OpenAI-compatible server gives without ``echo``, which llama.cpp lacks).
  The chat messages become one prompt through the server's own chat template (llama.cpp's
  ``/apply-template``) or, with ``prompt_format="plain"``, as ``role: content`` lines. An answer's next
  token is the longest top-``logprobs`` token that continues it (the tokenizer's own split for plain words);
  a token outside the top ``logprobs`` ends the answer's score at the lowest listed log-probability (an
  upper bound on it), counted in :attr:`ClientStats.below_top`.

Failures end in :class:`LLMUnavailable` or :class:`LLMInvalidOutput` (both :class:`LLMError`); callers
decide what to do instead (the LLM agent falls back to a safe action).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import urllib.request
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

Message = Mapping[str, str]
STRUCTURED_MODES = ("json_schema", "json_object", "none")
PROMPT_FORMATS = ("server", "plain")


class LLMError(RuntimeError):
    """The LLM gave no usable answer."""


class LLMUnavailable(LLMError):
    """The server could not be reached or kept failing after the retries."""


class LLMInvalidOutput(LLMError):
    """Every answer failed validation (after the retries for invalid output)."""


@dataclass
class ClientStats:
    """Counters of a client since it was made.

    ``requests``: HTTP requests sent (retries included); ``cache_hits``: answers served from the cache;
    ``retries``: requests repeated after a transport failure; ``invalid``: answers that failed
    validation; ``failures``: :meth:`LLMClient.complete` calls that raised; ``seconds``: wall time spent
    waiting for the server (backoff sleeps included); ``below_top``: ranked answers whose score was cut at
    a token outside the server's top log-probabilities (:meth:`OpenAIClient.rank`).
    """

    requests: int = 0
    cache_hits: int = 0
    retries: int = 0
    invalid: int = 0
    failures: int = 0
    seconds: float = 0.0
    below_top: int = 0

    def snapshot(self) -> ClientStats:
        """A copy of the current counts."""
        return ClientStats(**{f.name: getattr(self, f.name) for f in fields(self)})

    def since(self, earlier: ClientStats) -> ClientStats:
        """The counts accumulated after ``earlier`` (a :meth:`snapshot`)."""
        return ClientStats(**{f.name: getattr(self, f.name) - getattr(earlier, f.name) for f in fields(self)})


@runtime_checkable
class LLMClient(Protocol):
    """Anything that answers chat messages with text, optionally constrained by a JSON schema."""

    stats: ClientStats

    def complete(
        self,
        messages: Sequence[Message],
        schema: Mapping[str, Any] | None = None,
        validate: Callable[[str], Any] | None = None,
    ) -> str:
        """The answer to ``messages``; ``validate`` raises ``ValueError`` for an unusable answer.
        Raises :class:`LLMError` when no valid answer could be had."""


class PromptCache:
    """Answers by request key: an LRU dict of ``size`` entries, backed by one JSON file per key in
    ``directory`` when given (files are written atomically, so worker processes may share a folder)."""

    def __init__(self, size: int = 4096, directory: str | Path | None = None) -> None:
        self.size = int(size)
        self.directory = Path(directory).expanduser() if directory else None
        self._entries: OrderedDict[str, str] = OrderedDict()

    @staticmethod
    def key(body: Mapping[str, Any]) -> str:
        """SHA-256 of the canonical JSON of a request body."""
        canonical = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def _path(self, key: str) -> Path:
        assert self.directory is not None
        return self.directory / key[:2] / f"{key}.json"

    def get(self, key: str) -> str | None:
        """The cached answer, or ``None``."""
        hit = self._entries.get(key)
        if hit is not None:
            self._entries.move_to_end(key)
            return hit
        if self.directory is None:
            return None
        try:
            hit = json.loads(self._path(key).read_text(encoding="utf-8"))["answer"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        self._remember(key, hit)
        return hit

    def put(self, key: str, answer: str, body: Mapping[str, Any] | None = None) -> None:
        """Store ``answer`` (and, on disk, the request ``body`` beside it for inspection)."""
        self._remember(key, answer)
        if self.directory is None:
            return
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"answer": answer, "request": body}, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, path)

    def _remember(self, key: str, answer: str) -> None:
        if self.size <= 0:
            return
        self._entries[key] = answer
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


class OpenAIClient:
    """An :class:`LLMClient` for an OpenAI-compatible ``/v1/chat/completions`` endpoint.

    Args:
        base_url: the API root, e.g. ``http://127.0.0.1:8765/v1``.
        model: the model name sent with each request.
        api_key: the bearer token (``None``: ``$OPENAI_API_KEY``, else a placeholder local servers accept).
        timeout: seconds per request.
        max_retries: further attempts after a transport failure; the wait before retry ``i`` (from 0) is
            ``min(backoff * backoff_factor ** i, backoff_max)`` seconds.
        invalid_retries: further attempts after an answer that failed validation, at ``retry_temperature``.
        temperature, max_tokens, seed: sampling settings of every request.
        structured: how the schema is sent: ``json_schema`` (OpenAI structured outputs), ``json_object``
            (JSON mode without the schema) or ``none`` (prompt and client-side validation only).
        cache_size, cache_dir: the prompt cache (``cache_size=0`` and no folder switch it off).
        prompt_format: how :meth:`rank` turns messages into a prompt: ``server`` (the server's chat
            template, llama.cpp's ``/apply-template``) or ``plain`` (``role: content`` lines).
        top_logprobs: how many next-token log-probabilities :meth:`rank` asks for.
        sleep: the function that waits between retries (tests pass a recorder).
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        timeout: float = 30.0,
        max_retries: int = 1,
        backoff: float = 0.5,
        backoff_factor: float = 2.0,
        backoff_max: float = 8.0,
        invalid_retries: int = 1,
        temperature: float = 0.0,
        retry_temperature: float = 0.7,
        max_tokens: int = 32,
        seed: int | None = 0,
        structured: str = "json_schema",
        cache_size: int = 4096,
        cache_dir: str | Path | None = None,
        prompt_format: str = "server",
        top_logprobs: int = 100,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        import openai

        if structured not in STRUCTURED_MODES:
            raise ValueError(f"structured must be one of {', '.join(STRUCTURED_MODES)}, got {structured!r}")
        if prompt_format not in PROMPT_FORMATS:
            raise ValueError(f"prompt_format must be one of {', '.join(PROMPT_FORMATS)}, got {prompt_format!r}")
        self.prompt_format, self.top_logprobs = prompt_format, int(top_logprobs)
        self.timeout = float(timeout)
        self._templates: OrderedDict[str, str] = OrderedDict()
        self.base_url, self.model = base_url, model
        self.max_retries, self.invalid_retries = int(max_retries), int(invalid_retries)
        self.backoff, self.backoff_factor, self.backoff_max = float(backoff), float(backoff_factor), float(backoff_max)
        self.temperature, self.retry_temperature = float(temperature), float(retry_temperature)
        self.max_tokens, self.seed, self.structured = int(max_tokens), seed, structured
        self.cache = PromptCache(cache_size, cache_dir)
        self.sleep = sleep
        self.stats = ClientStats()
        self._openai = openai
        self._client = openai.OpenAI(
            base_url=base_url,
            api_key=api_key or os.environ.get("OPENAI_API_KEY") or "no-key",
            timeout=float(timeout),
            max_retries=0,
        )

    def backoff_delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (0 for the first)."""
        return min(self.backoff * self.backoff_factor**retry, self.backoff_max)

    def request_body(self, messages: Sequence[Message], schema: Mapping[str, Any] | None, temperature: float) -> dict[str, Any]:
        """The chat-completion request for ``messages`` (also the cache key's content)."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [dict(m) for m in messages],
            "temperature": temperature,
            "max_tokens": self.max_tokens,
        }
        if self.seed is not None:
            body["seed"] = int(self.seed)
        if schema is not None and self.structured == "json_schema":
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "answer", "strict": True, "schema": dict(schema)},
            }
        elif schema is not None and self.structured == "json_object":
            body["response_format"] = {"type": "json_object"}
        return body

    def complete(
        self,
        messages: Sequence[Message],
        schema: Mapping[str, Any] | None = None,
        validate: Callable[[str], Any] | None = None,
    ) -> str:
        """The first answer that passes ``validate``, from the cache or the server (see the module doc)."""
        problem = ""
        for attempt in range(self.invalid_retries + 1):
            body = self.request_body(messages, schema, self.temperature if attempt == 0 else self.retry_temperature)
            key = PromptCache.key(body)
            answer = self.cache.get(key)
            fresh = answer is None
            if fresh:
                answer = self._send(body)
            else:
                self.stats.cache_hits += 1
            try:
                if validate is not None:
                    validate(answer)
            except ValueError as err:
                self.stats.invalid += 1
                problem = str(err)
                continue
            if fresh:
                self.cache.put(key, answer, body)
            return answer
        self.stats.failures += 1
        raise LLMInvalidOutput(f"no valid answer after {self.invalid_retries + 1} attempts: {problem}")

    def _send(self, body: dict[str, Any]) -> str:
        """One answer from the server, retrying transport failures with backoff (``""`` for no content)."""
        response = self._retrying(lambda: self._client.chat.completions.create(**body))
        choices = response.choices or []
        return (choices[0].message.content or "") if choices else ""

    def _retrying(self, call: Callable[[], Any]) -> Any:
        """``call()`` (one request), repeated after transport failures with backoff; the time spent and the
        requests go into :attr:`stats`."""
        oa = self._openai
        retryable = (oa.APIConnectionError, oa.RateLimitError, oa.InternalServerError)
        started = time.perf_counter()
        attempt = 0
        try:
            while True:
                self.stats.requests += 1
                try:
                    return call()
                except retryable as err:
                    if attempt == self.max_retries:
                        self.stats.failures += 1
                        raise LLMUnavailable(f"{self.base_url}: {type(err).__name__}: {err} (after {attempt + 1} attempts)") from err
                    self.stats.retries += 1
                    self.sleep(self.backoff_delay(attempt))
                    attempt += 1
                except oa.APIError as err:
                    self.stats.failures += 1
                    raise LLMUnavailable(f"{self.base_url}: {type(err).__name__}: {err}") from err
        finally:
            self.stats.seconds += time.perf_counter() - started

    def rank(self, messages: Sequence[Message], answers: Sequence[str], prefix: str = "") -> list[float]:
        """The log-likelihood of each of ``answers`` as the assistant's reply to ``messages`` after ``prefix``
        (the reply's fixed opening, e.g. ``{"action": "``), summed over its tokens (see the module doc)."""
        prompt = self.chat_prompt(messages) + prefix
        scores = []
        for answer in answers:
            total, done = 0.0, ""
            while len(done) < len(answer):
                top = self.next_token_logprobs(prompt + done)
                rest = answer[len(done):]
                fits = [token for token in top if token and rest.startswith(token)]
                if not fits:
                    total += min(top.values()) if top else -math.inf
                    self.stats.below_top += 1
                    break
                token = max(fits, key=len)
                total += top[token]
                done += token
            scores.append(total)
        return scores

    def next_token_logprobs(self, prompt: str) -> dict[str, float]:
        """The server's top :attr:`top_logprobs` next tokens of the raw text ``prompt`` with their
        log-probabilities (cached like answers)."""
        body = {"model": self.model, "prompt": prompt, "max_tokens": 1, "temperature": 0.0,
                "logprobs": self.top_logprobs}
        key = PromptCache.key({"completions": body})
        cached = self.cache.get(key)
        if cached is not None:
            self.stats.cache_hits += 1
            return json.loads(cached)
        response = self._retrying(lambda: self._client.completions.create(**body))
        top = _top_logprobs(response)
        self.cache.put(key, json.dumps(top), body)
        return top

    def chat_prompt(self, messages: Sequence[Message]) -> str:
        """``messages`` as one prompt that ends where the assistant's reply begins (see ``prompt_format``)."""
        if self.prompt_format == "plain":
            return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant: "
        key = json.dumps([dict(m) for m in messages], sort_keys=True)
        if key not in self._templates:
            root = self.base_url.rstrip("/").removesuffix("/v1")
            data = json.dumps({"messages": [dict(m) for m in messages]}).encode("utf-8")
            request = urllib.request.Request(f"{root}/apply-template", data, {"Content-Type": "application/json"})
            self.stats.requests += 1
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as reply:
                    self._templates[key] = str(json.loads(reply.read())["prompt"])
            except (OSError, ValueError, KeyError) as err:
                self.stats.failures += 1
                raise LLMUnavailable(f"{root}/apply-template: {type(err).__name__}: {err} (ranking needs the "
                                     "server's chat template, as llama.cpp serves it; with another server set "
                                     "prompt_format=plain)") from err
            while len(self._templates) > 64:
                self._templates.popitem(last=False)
        return self._templates[key]


def _top_logprobs(response: Any) -> dict[str, float]:
    """Token -> log-probability of a completion's first generated token, from either form servers use: the
    legacy completions ``top_logprobs`` (a list of dicts) or the chat-style ``content`` list llama.cpp sends."""
    choice = response.choices[0]
    logprobs = choice.logprobs
    if logprobs is None:
        raise LLMUnavailable("the completions endpoint returned no logprobs (ranking needs them)")
    if getattr(logprobs, "top_logprobs", None):
        return {str(t): float(v) for t, v in logprobs.top_logprobs[0].items()}
    content = (getattr(logprobs, "model_extra", None) or {}).get("content") or []
    if not content:
        raise LLMUnavailable("the completions endpoint returned no top logprobs (ranking needs them)")
    top: dict[str, float] = {}
    for entry in content[0].get("top_logprobs") or []:
        token, value = str(entry["token"]), float(entry["logprob"])
        top[token] = max(value, top.get(token, -math.inf))
    return top
