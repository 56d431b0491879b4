"""The prompt-based LLM agent (VELMA-style) with Mem4Nav memory cues, registered as ``llm``.

At every step the agent

1. embeds the panorama features (flattened and L2-normalised) and reads its Mem4Nav memory at its
   position (before writing, so the cues are about the past), turning each retrieved entry into a cue:
   the entry's place relative to the agent (metres right, metres ahead) and the categories closest in
   the remembered embedding;
2. writes the current observation into the memory;
3. asks the LLM with a prompt of the instruction, the streets and landmarks around it in words, the
   numbered action history and the memory cues (:mod:`vlnkit.agents.llm.prompt`), for a JSON answer
   constrained by the action schema;
4. returns the action, read from the answer as described below.

With ``decoding=constrained`` step 3 asks for no text: the LLM ranks the available actions by the
log-likelihood of each action word as the start of its JSON answer (``{"action": "<word>``), through the
server's completion log-probabilities (:meth:`~vlnkit.agents.llm.client.OpenAIClient.rank`), and the most
likely action is taken (ties: the order the prompt lists actions in). No answer can be invalid, so the
reading below applies to ``decoding=free`` only; an unreachable server still falls back. With
``calibration=content_free`` (contextual calibration, Zhao et al. 2021) each action's log-likelihood is
taken relative to its log-likelihood after a content-free prompt (the same system prompt, every field of
the user prompt ``N/A``), which removes a small model's standing preference for one action word.

Reading the answer: a JSON object naming an available action is taken as it is. An answer that is not
(no JSON, JSON without an ``action`` string, an action that is not available), after the client's
``invalid_retries`` retries, is read as free text: when it names exactly one available action as a
word (``"I turn left here."``) that action is taken and ``llm_free_text`` counts it
(:func:`~vlnkit.agents.llm.prompt.action_in_text`); otherwise the fallback action is taken.

Fallback: an unreachable server (after ``max_retries`` retries with backoff) or an answer with no
readable action makes the agent STOP by default. STOP is the one action that cannot take the
agent anywhere the instruction did not ask for (what a robot does when its planner fails); it ends the
episode, so a dead server costs one failed request per episode instead of one per step up to the step
limit, and the failure shows in the results (the episode ends where the LLM failed, and
``llm_fallbacks`` counts it) instead of passing for a forward-walking baseline. ``fallback_action``
chooses another. Both counts are in :meth:`LLMAgent.episode_stats`, which the evaluation records in each
episode's ``agent_stats``, and every free-text reading and fallback is logged as a warning.

The agent needs semantic panorama features (``panorama=scene`` or ``auto`` on the synthetic city) to
describe landmarks and to remember: the names of the feature columns come from ``categories``, or from
the release's ``graph/scene.jsonl`` in the order :class:`~vlnkit.envs.street.panorama.SceneFeatureSource`
uses (:func:`resolve_categories`). Without a panorama in the observation the prompt has streets but no
landmarks, and memory stays empty.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from vlnkit.agents.base import register
from vlnkit.agents.llm.client import LLMClient, LLMError, LLMInvalidOutput, OpenAIClient
from vlnkit.agents.llm.prompt import (
    ACTION_WORDS,
    InvalidAction,
    MemoryCue,
    action_in_text,
    action_schema,
    available_actions,
    describe_landmarks,
    describe_streets,
    egocentric,
    format_memory,
    in_reading_order,
    parse_action,
    system_prompt,
    user_prompt,
    visible_landmarks,
)
from vlnkit.agents.llm.server import LocalLLMServer
from vlnkit.agents.memory_support import build_memory  # noqa: F401  (re-exported: vlnkit.agents.llm.build_memory)
from vlnkit.agents.memory_support import memory_from_config
from vlnkit.config import config_dir
from vlnkit.envs.street.actions import StreetAction
from vlnkit.memory import Mem4NavMemory, Retrieval

log = logging.getLogger(__name__)

DECODINGS = ("free", "constrained")
CALIBRATIONS = ("none", "content_free")
ANSWER_PREFIX = '{"action": "'
"""How a JSON answer opens; with ``decoding=constrained`` the action word that follows it is scored."""
SAME_PLACE_M = 2.0
"""Memory cues this close together (metres) that name the same objects count as one place."""


class FlatViewCodec:
    """Panorama features -> the LLM agent's memory vectors: the egocentric ``(sectors, categories)`` view
    flattened and L2-normalised, which is also the graph descriptor (a
    :class:`~vlnkit.agents.memory_support.MemoryCodec`)."""

    def __init__(self, sectors: int, categories: int) -> None:
        self.sectors, self.categories = int(sectors), int(categories)

    @property
    def dim(self) -> int:
        """Embedding size: the flattened view."""
        return self.sectors * self.categories

    @property
    def descriptor_dim(self) -> int:
        """Descriptor size: the embedding's."""
        return self.dim

    def embed(self, panorama: np.ndarray, heading: float = 0.0) -> np.ndarray:
        """The unit-length flattened view (the heading is not used: the view stays egocentric)."""
        embedding = np.asarray(panorama, dtype=np.float32).reshape(self.dim)
        norm = float(np.linalg.norm(embedding))
        return embedding / norm if norm > 0 else embedding

    def descriptor(self, panorama: np.ndarray, heading: float = 0.0) -> np.ndarray:
        """The graph descriptor: the embedding."""
        return self.embed(panorama, heading)


class LLMAgent:
    """Asks an LLM for each action (see the module doc).

    Args:
        client: the LLM (any :class:`~vlnkit.agents.llm.client.LLMClient`).
        num_actions: the environment's number of actions (ids ``0..num_actions-1``).
        categories: names of the panorama feature columns.
        sectors: panorama sectors (rows of the features).
        memory: the Mem4Nav memory the agent owns (``None``: no memory cues).
        visible_threshold: closeness a landmark needs to be named as visible.
        history_limit: how many of the latest actions the prompt lists.
        max_cues: memory entries read per step.
        cue_objects: categories named per memory cue.
        fallback_action: the action taken when the LLM's answer names no action.
        server: a local server the agent started and keeps alive (``start_server``), if any.
        decoding: ``free`` (a JSON answer, read as the module doc says) or ``constrained`` (the actions
            ranked by log-likelihood; the client must have ``rank``).
        calibration: with ``constrained``, ``none`` or ``content_free`` (see the module doc).

    ``history`` holds the episode's actions, ``last_messages`` the latest prompt and ``codec`` the
    :class:`FlatViewCodec` its memory is written with.
    """

    uses_info = False
    reads_panorama = True

    def __init__(
        self,
        client: LLMClient,
        num_actions: int,
        categories: Sequence[str],
        sectors: int = 8,
        memory: Mem4NavMemory | None = None,
        visible_threshold: float = 0.25,
        history_limit: int | None = 20,
        max_cues: int = 3,
        cue_objects: int = 2,
        fallback_action: StreetAction = StreetAction.STOP,
        server: LocalLLMServer | None = None,
        decoding: str = "free",
        calibration: str = "none",
    ) -> None:
        if decoding not in DECODINGS:
            raise ValueError(f"decoding must be one of {', '.join(DECODINGS)}, got {decoding!r}")
        if calibration not in CALIBRATIONS:
            raise ValueError(f"calibration must be one of {', '.join(CALIBRATIONS)}, got {calibration!r}")
        self.calibration = calibration
        if decoding == "constrained" and not callable(getattr(client, "rank", None)):
            raise ValueError(f"decoding=constrained needs a client that ranks answers; {type(client).__name__} "
                             "has no rank()")
        self.decoding = decoding
        self.client = client
        self.actions = available_actions(num_actions)
        if fallback_action not in self.actions:
            raise ValueError(f"fallback action {fallback_action.name} is not available with {num_actions} actions")
        self.categories = list(categories)
        self.sectors = int(sectors)
        self.codec = FlatViewCodec(self.sectors, len(self.categories))
        self.memory = memory
        self.visible_threshold = float(visible_threshold)
        self.history_limit = history_limit
        self.max_cues, self.cue_objects = int(max_cues), int(cue_objects)
        self.fallback_action = fallback_action
        self.server = server
        self.schema = action_schema(self.actions)
        self.remembers = memory is not None and memory.retrieves
        self.system = system_prompt(self.actions, memory=self.remembers)
        # the content-free prompt that calibration=content_free scores the actions against
        blank = user_prompt("N/A", "N/A", None, [], None, self.actions)
        self._content_free = [{"role": "system", "content": self.system}, {"role": "user", "content": blank}]
        self.history: list[StreetAction] = []
        self.last_messages: list[dict[str, str]] = []
        self._calls = self._fallbacks = self._free_text = 0
        self._seconds = 0.0
        self._client_start = client.stats.snapshot()

    def reset(self, observation: dict[str, Any], info: dict[str, Any], seed: int) -> None:
        """Start an episode: empty memory, history and per-episode counts."""
        if self.memory is not None:
            self.memory.reset()
        self.history = []
        self.last_messages = []
        self._calls = self._fallbacks = self._free_text = 0
        self._seconds = 0.0
        self._client_start = self.client.stats.snapshot()

    def act(self, observation: dict[str, Any], info: dict[str, Any] | None = None) -> int:
        """The LLM's action for ``observation``, read as the module doc says (JSON answer, else an action
        named in free text, else the fallback action)."""
        messages = self.messages(observation)
        self.last_messages = messages
        self._calls += 1
        answers: list[str] = []

        def validate(answer: str) -> StreetAction:
            answers.append(answer)
            return self.parse(answer)

        started = time.perf_counter()
        try:
            if self.decoding == "constrained":
                action = self._ranked(messages)
            else:
                answer = self.client.complete(messages, self.schema, validate=validate)
                answers.append(answer)
                action = self.parse(answer)
        except (InvalidAction, LLMInvalidOutput) as err:
            action = self._read_free_text(answers[-1] if answers else None, err)
        except LLMError as err:
            action = self._fall_back(err)
        finally:
            self._seconds += time.perf_counter() - started
        self.history.append(action)
        return int(action)

    def _ranked(self, messages: list[dict[str, str]]) -> StreetAction:
        """The available action whose word the LLM finds most likely as its answer (``decoding=constrained``)."""
        listed = in_reading_order(self.actions)
        words = [ACTION_WORDS[a] for a in listed]
        scores = np.asarray(self.client.rank(messages, words, prefix=ANSWER_PREFIX))  # type: ignore[attr-defined]
        if self.calibration == "content_free":
            scores = scores - np.asarray(self.client.rank(self._content_free, words, prefix=ANSWER_PREFIX))  # type: ignore[attr-defined]
        return listed[int(np.argmax(scores))]

    def _read_free_text(self, answer: str | None, err: Exception) -> StreetAction:
        """The action named in an answer that is not a valid JSON action, else the fallback action."""
        action = action_in_text(answer, self.actions)
        if action is None:
            return self._fall_back(err)
        self._free_text += 1
        log.warning("LLM agent reads %s from a free-text answer at step %d: %r", action.name, len(self.history) + 1,
                    (answer or "")[:200])
        return action

    def _fall_back(self, err: Exception) -> StreetAction:
        """The fallback action, counted and logged with the reason."""
        self._fallbacks += 1
        log.warning("LLM agent falls back to %s at step %d: %s", self.fallback_action.name, len(self.history) + 1, err)
        return self.fallback_action

    def parse(self, answer: str) -> StreetAction:
        """The action in an LLM answer (raises ``ValueError`` for an invalid one)."""
        return parse_action(answer, self.actions)

    def messages(self, observation: dict[str, Any]) -> list[dict[str, str]]:
        """The chat messages for this step; reads and then writes the memory (call once per step)."""
        heading = float(np.asarray(observation["heading"]).reshape(-1)[0])
        position = np.asarray(observation["position"], dtype=np.float64).reshape(2)
        panorama = observation.get("panorama")
        landmarks = None
        cues: list[MemoryCue] = []
        if panorama is not None:
            features = self._features(panorama)
            landmarks = describe_landmarks(visible_landmarks(features, self.categories, self.visible_threshold))
            if self.remembers:
                cues = self._remember(features, position, heading)
        text = user_prompt(
            str(observation["instruction"]),
            describe_streets(observation["links"], heading),
            landmarks,
            self.history,
            format_memory(cues),
            self.actions,
            self.history_limit,
        )
        return [{"role": "system", "content": self.system}, {"role": "user", "content": text}]

    def _features(self, panorama: np.ndarray) -> np.ndarray:
        """The panorama as float features, checked to be ``(sectors, categories)``."""
        features = np.asarray(panorama, dtype=np.float32)
        expected = (self.sectors, len(self.categories))
        if features.shape != expected:
            raise ValueError(
                f"the llm agent reads semantic panorama features of shape {expected} (panorama=scene), "
                f"got an observation of shape {features.shape}"
            )
        return features

    def _remember(self, features: np.ndarray, position: np.ndarray, heading: float) -> list[MemoryCue]:
        """Memory cues for this place, then the write of the current observation."""
        assert self.memory is not None
        embedding = self.codec.embed(features, heading)
        where = np.array([position[0], position[1], 0.0])
        cues = []
        if self.memory.writes and self.max_cues > 0:
            cues = self.cues(self.memory.retrieve(embedding, where, k=self.max_cues), position, heading)
        self.memory.write(embedding, where, len(self.history))
        return cues

    def cues(self, found: Retrieval, position: np.ndarray, heading: float) -> list[MemoryCue]:
        """One cue per remembered place: the retrieved entry's place (``anchors``) relative to the agent
        and the ``cue_objects`` categories closest in its embedding. Entries within
        :data:`SAME_PLACE_M` of an earlier cue naming the same objects (an octree leaf and the graph node
        of one visit) are left out."""
        cues: list[MemoryCue] = []
        for anchor, embedding in zip(found.anchors, found.embeddings):
            x, y = egocentric(anchor[:2] - position, heading)
            closeness = np.asarray(embedding, dtype=np.float32).reshape(self.sectors, len(self.categories)).max(axis=0)
            order = [c for c in np.argsort(-closeness, kind="stable")[: self.cue_objects].tolist() if closeness[c] > 0]
            cue = MemoryCue(x, y, tuple(self.categories[c] for c in order))
            if not any(c.objects == cue.objects and math.dist((c.x, c.y), (x, y)) <= SAME_PLACE_M for c in cues):
                cues.append(cue)
        return cues

    def episode_stats(self) -> dict[str, int | float]:
        """This episode's LLM use: decisions asked (``llm_calls``), fallback actions taken, actions read
        from free-text answers, HTTP requests, cache hits, transport retries, invalid answers and seconds
        spent asking."""
        client = self.client.stats.since(self._client_start)
        return {
            "llm_calls": self._calls,
            "llm_fallbacks": self._fallbacks,
            "llm_free_text": self._free_text,
            "llm_requests": client.requests,
            "llm_cache_hits": client.cache_hits,
            "llm_retries": client.retries,
            "llm_invalid": client.invalid,
            "llm_seconds": round(self._seconds, 4),
        }


def resolve_categories(cfg: DictConfig) -> list[str]:
    """Panorama feature column names: ``categories``; else those of ``scene_file``; else, with a
    ``release_dir``, those of its ``graph/scene.jsonl`` (none when it has no scene description: the agent
    then describes streets only); else those of the built-in synthetic city ``(city_seed, city_size)``."""
    from vlnkit.envs.street.panorama import SceneFeatureSource

    if cfg.categories:
        return [str(c) for c in cfg.categories]
    if cfg.scene_file:
        scene = Path(str(cfg.scene_file)).expanduser()
    elif cfg.release_dir:
        scene = Path(str(cfg.release_dir)).expanduser() / "graph" / "scene.jsonl"
        if not scene.is_file():
            return []
    else:
        from vlnkit.envs.synth import default_city

        scene = default_city(int(cfg.city_seed), str(cfg.city_size)) / "graph" / "scene.jsonl"
    return SceneFeatureSource(scene).categories


def agent_config(cfg: DictConfig | Mapping[str, Any] | None = None) -> DictConfig:
    """``configs/agent/llm.yaml`` with ``cfg`` merged over it (unknown keys raise, except inside
    ``memory_overrides``, which :class:`Mem4NavConfig` checks)."""
    defaults = OmegaConf.load(Path(config_dir()) / "agent" / "llm.yaml")
    OmegaConf.set_struct(defaults, True)
    OmegaConf.set_struct(defaults.memory_overrides, False)
    given = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg or {})
    return OmegaConf.merge(defaults, given)


@register("llm")
def _llm(cfg: DictConfig, num_actions: int) -> LLMAgent:
    cfg = agent_config(cfg)
    server = None
    base_url, model = str(cfg.base_url), str(cfg.model)
    if cfg.start_server:
        server = LocalLLMServer(cfg.model_path, port=0, threads=cfg.server_threads).start()
        base_url, model = server.base_url, server.alias
    client = OpenAIClient(
        base_url,
        model,
        api_key=cfg.api_key,
        timeout=float(cfg.timeout),
        max_retries=int(cfg.max_retries),
        backoff=float(cfg.backoff),
        backoff_factor=float(cfg.backoff_factor),
        backoff_max=float(cfg.backoff_max),
        invalid_retries=int(cfg.invalid_retries),
        temperature=float(cfg.temperature),
        retry_temperature=float(cfg.retry_temperature),
        max_tokens=int(cfg.max_tokens),
        seed=None if cfg.seed is None else int(cfg.seed),
        structured=str(cfg.structured),
        cache_size=int(cfg.cache_size),
        cache_dir=cfg.cache_dir,
        prompt_format=str(cfg.prompt_format),
        top_logprobs=int(cfg.top_logprobs),
    )
    categories = resolve_categories(cfg)
    memory = None
    if categories:
        codec = FlatViewCodec(int(cfg.sectors), len(categories))
        memory = memory_from_config(cfg, codec.dim, codec.descriptor_dim)
    return LLMAgent(
        client,
        num_actions,
        categories,
        int(cfg.sectors),
        memory,
        visible_threshold=float(cfg.visible_threshold),
        history_limit=None if cfg.history_limit is None else int(cfg.history_limit),
        max_cues=int(cfg.max_cues),
        cue_objects=int(cfg.cue_objects),
        fallback_action=StreetAction[str(cfg.fallback_action).upper()],
        server=server,
        decoding=str(cfg.decoding),
        calibration=str(cfg.calibration),
    )
