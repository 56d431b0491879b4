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
  no request.

Failures end in :class:`LLMUnavailable` or :class:`LLMInvalidOutput` (both :class:`LLMError`); callers
decide what to do instead (the LLM agent falls back to a safe action).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

Message = Mapping[str, str]
STRUCTURED_MODES = ("json_schema", "json_object", "none")


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
    waiting for the server (backoff sleeps included).
    """

    requests: int = 0
    cache_hits: int = 0
    retries: int = 0
    invalid: int = 0
    failures: int = 0
    seconds: float = 0.0

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
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        import openai

        if structured not in STRUCTURED_MODES:
            raise ValueError(f"structured must be one of {', '.join(STRUCTURED_MODES)}, got {structured!r}")
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
        oa = self._openai
        retryable = (oa.APIConnectionError, oa.RateLimitError, oa.InternalServerError)
        started = time.perf_counter()
        attempt = 0
        try:
            while True:
                self.stats.requests += 1
                try:
                    response = self._client.chat.completions.create(**body)
                except retryable as err:
                    if attempt == self.max_retries:
                        self.stats.failures += 1
                        raise LLMUnavailable(f"{self.base_url}: {type(err).__name__}: {err} (after {attempt + 1} attempts)") from err
                    self.stats.retries += 1
                    self.sleep(self.backoff_delay(attempt))
                    attempt += 1
                    continue
                except oa.APIError as err:
                    self.stats.failures += 1
                    raise LLMUnavailable(f"{self.base_url}: {type(err).__name__}: {err}") from err
                choices = response.choices or []
                return (choices[0].message.content or "") if choices else ""
        finally:
            self.stats.seconds += time.perf_counter() - started
