"""The multimodal policy agent (FLAME-style, :mod:`vlnkit.agents.policy.model`) with Mem4Nav memory
tokens, registered as ``policy``.

At the start of an episode it parses the instruction into sub-goals with the lexicon stored in the
checkpoint (:func:`~vlnkit.agents.policy.features.subgoal_rows`). Each step the agent embeds the panorama, asks its memory with the policy's query
``Linear([h_{t-1} ; mean visual token])`` (the memory's retrieval policy: STM, else LTM top-m), feeds the
retrieved entries to the policy as memory tokens (unless ``memory_tokens`` is off or the memory variant is
``none``), takes the most likely action, and writes the view into the memory. It needs a checkpoint from
``vlnkit train policy`` (``checkpoint``); the memory variant and its settings come from the agent config
like every memory agent's (:mod:`vlnkit.agents.memory_support`). ``info`` is never read.

What it reads: the observations ``instruction``, ``heading``, ``position``, ``links`` and ``panorama`` as the
``(sectors, categories)`` landmark features it was trained on (the synthetic city's ``graph/scene.jsonl``
gives them); it refuses to start an episode without them (:class:`~vlnkit.agents.base.AgentInputError`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from vlnkit.agents.base import register, require_feature_panorama
from vlnkit.agents.memory_support import ViewCodec, load_agent_config, memory_from_config
from vlnkit.agents.modular.language import LandmarkLexicon
from vlnkit.agents.policy.attention import PolicyAttention
from vlnkit.agents.policy.features import (
    EXTRA_MEMORY_FEATURES,
    Vocabulary,
    link_bins,
    memory_features,
    strided_history,
    subgoal_rows,
)
from vlnkit.agents.policy.model import FlamePolicy
from vlnkit.agents.policy.train import load_policy
from vlnkit.memory import Mem4NavMemory


class PolicyAgent:
    """Runs a trained :class:`FlamePolicy` greedily, with memory tokens from its own Mem4Nav memory.

    Args:
        model: the trained policy.
        vocabulary: its instruction vocabulary.
        codec: panorama -> memory embedding (the one the policy was trained with).
        memory: the agent's Mem4Nav memory.
        num_actions: the environment's action count (actions the policy was not trained on are never taken).
        lexicon: landmark phrases -> categories for the sub-goals (the one the policy was trained with).
        memory_tokens: whether retrieved entries reach the policy.
        attention: the ``attention`` block of the agent config: training-free interventions on the policy's
            cross-attention (:mod:`vlnkit.agents.policy.attention`); None: none.
    """

    uses_info = False
    reads_panorama = True

    def __init__(self, model: FlamePolicy, vocabulary: Vocabulary, codec: ViewCodec, memory: Mem4NavMemory,
                 num_actions: int, lexicon: LandmarkLexicon, memory_tokens: bool = True,
                 attention: Mapping[str, Any] | None = None) -> None:
        self.model = model.eval()
        self.vocabulary = vocabulary
        self.codec = codec
        self.memory = memory
        self.num_actions = min(int(num_actions), model.config.num_actions)
        self.memory_tokens = bool(memory_tokens) and bool(memory.parts)
        self.lexicon = lexicon
        self._instruction: torch.Tensor | None = None
        self.attention = PolicyAttention(self.model, attention, self._encode)

    def _encode(self, text: str) -> torch.Tensor:
        """The instruction slots of ``text``."""
        c = self.model.config
        return self.model.encode_instruction(torch.from_numpy(self.vocabulary.encode(text, c.max_words))[None])

    def reset(self, observation: dict[str, Any], info: dict[str, Any] | None, seed: int) -> None:
        """Encode the instruction and empty the memory and the history (``info`` is not read); refuses
        observations without the panorama features it was trained on
        (:class:`~vlnkit.agents.base.AgentInputError`)."""
        c = self.model.config
        require_feature_panorama("policy", observation, (c.sectors, c.categories))
        text = str(observation["instruction"])
        goals = torch.from_numpy(subgoal_rows(text, self.lexicon, c.subgoals))[None]
        with torch.inference_mode():
            self._instruction = self._encode(text)
            self._subgoals = self.model.encode_subgoals(goals)
        self.memory.reset()
        self.attention.reset()
        self.hidden = torch.zeros(1, c.d_model)
        self.summaries: list[torch.Tensor] = []
        self.steps = 0

    def act(self, observation: dict[str, Any], info: dict[str, Any] | None = None) -> int:
        """The policy's most likely action for this observation."""
        if self._instruction is None:
            raise RuntimeError("call reset() before act()")
        c = self.model.config
        heading = float(np.asarray(observation["heading"]).reshape(-1)[0])
        position = np.array([*np.asarray(observation["position"], dtype=np.float64).reshape(-1)[:2], 0.0])
        panorama_np = np.asarray(observation["panorama"], dtype=np.float32)
        panorama = torch.from_numpy(panorama_np)[None]
        links = torch.from_numpy(link_bins(observation["links"], heading, c.sectors))[None]
        embedding = self.codec.embed(panorama_np, heading)
        with torch.inference_mode():
            visual = self.model.visual_tokens(panorama, links)
            query = self.model.memory_query(self.hidden, visual)
            rows = np.zeros((c.memory_tokens, c.memory_dim + EXTRA_MEMORY_FEATURES), dtype=np.float32)
            if self.memory_tokens and self.memory.writes:
                found = self.memory.retrieve(query[0].numpy(), position, k=c.memory_tokens)
                rows = memory_features(found, position, heading, self.steps, c.memory_tokens, c.memory_dim)
            chosen = strided_history(self.steps, c.recent, c.stride)
            if chosen:
                history = torch.stack([self.summaries[i] for i in chosen], dim=1)
            else:
                history = torch.zeros(1, 0, c.d_model)
            ages = torch.tensor([self.steps - i for i in chosen], dtype=torch.long)
            history_pad = torch.zeros(1, len(chosen), dtype=torch.bool)

            def decide(view: torch.Tensor, streets: torch.Tensor, instruction: torch.Tensor | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
                return self.model.step(
                    self._instruction if instruction is None else instruction, self.model.subgoal_tokens(self._subgoals, view, streets),
                    visual if view is panorama and streets is links else self.model.visual_tokens(view, streets), history, ages, history_pad, torch.from_numpy(rows)[None],
                    query, self.hidden,
                )

            logits, self.hidden = self.attention.decide(decide, panorama, links)
            self.summaries.append(self.model.summary(panorama, links))
        if self.memory_tokens:
            self.memory.write(embedding, position, self.steps, descriptor=self.codec.descriptor(panorama_np, heading))
        action = int(torch.argmax(logits[0, : self.num_actions]))
        self.steps += 1
        return action


def agent_config(cfg: DictConfig | dict[str, Any] | None = None) -> DictConfig:
    """``configs/agent/policy.yaml`` with ``cfg`` merged over it (see :func:`load_agent_config`)."""
    return load_agent_config("policy", cfg)


def build_policy_agent(cfg: DictConfig | dict[str, Any] | None = None, num_actions: int = 4) -> PolicyAgent:
    """A :class:`PolicyAgent` from an agent config (see ``configs/agent/policy.yaml``)."""
    cfg = agent_config(cfg)
    path = Path(str(cfg.checkpoint)).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"no policy checkpoint at {path}; train one with `vlnkit train policy out={path}`")
    model, vocabulary, meta = load_policy(path)
    codec = ViewCodec(model.config.sectors, model.config.categories, float(meta["heading_weight"]))
    memory = memory_from_config(cfg, codec.dim, codec.descriptor_dim)
    attention = OmegaConf.to_container(cfg.attention) if cfg.get("attention") is not None else None
    return PolicyAgent(model, vocabulary, codec, memory, num_actions, meta["lexicon"], bool(cfg.memory_tokens),
                       attention)


@register("policy")
def _policy(cfg: DictConfig, num_actions: int) -> PolicyAgent:
    return build_policy_agent(cfg, num_actions)
