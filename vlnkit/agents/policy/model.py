"""A small FLAME-style policy: strided cross-attention over the history of panorama features, with the
Mem4Nav memory's retrieved entries concatenated to the latents it attends to.

Per step ``t`` the policy builds its latents (keys and values of cross-attention) from

- the instruction: ``instruction_slots`` tokens that learned queries read off the encoded words (one
  Transformer encoder layer over word and position embeddings, then one cross-attention), computed once
  per episode,
- the parsed sub-goals (when ``subgoals`` > 0): one token per sub-goal of the plan, the sum of an
  embedding per field (:func:`~vlnkit.agents.policy.features.subgoal_rows`) and of the sub-goal's place in
  the plan (computed once per episode), plus what the current panorama shows of the categories it names
  and where streets leave,
- the current panorama: one token per sector (the sector's category closeness and whether a street
  leaves in that direction, plus a sector embedding),
- the history: a summary token per earlier step, of the ``recent`` latest steps and every ``stride``-th
  before them (:func:`~vlnkit.agents.policy.features.strided_history`), with an age embedding,
- memory tokens: the entries retrieved from Mem4Nav (:func:`~vlnkit.agents.policy.features.memory_features`)
  plus their cosine with the query, projected to the model width;

and a few query tokens, the first built from the previous hidden state ``h_{t-1}``, run through ``layers`` blocks of self-attention, cross-attention to the latents and an MLP. The
first query token's output updates the recurrent state through a GRU cell, ``h_t = GRU(out, h_{t-1})``,
which gives the action logits (the strided history alone skips steps, so counting intersections or
landmarks since a sub-goal began needs a state that sees every step). The previous action is not an
input: with it, imitation learns to copy the teacher's last action (right on most steps, so training
accuracy looks high) and the policy never starts a turn or a stop on its own. The memory query is
``Linear([h_{t-1} ; mean visual token])``, in the memory's embedding space.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vlnkit.agents.policy.features import EXTRA_MEMORY_FEATURES, subgoal_sizes
from vlnkit.perception.kernels.mixers import create_token_mixer


@dataclass
class PolicyConfig:
    """Sizes of a :class:`FlamePolicy`.

    ``self_mixer`` names the token mixer (:func:`~vlnkit.perception.kernels.mixers.create_token_mixer`,
    non-causal) of the self-attention over the query tokens. Counting a block's self- and cross-attention as
    two layers, the self-attentions are the odd ones, so any other name gives the "hybrid" schedule of
    "Deconstructing Attention" (cheap odd layers, 50% standard layers): the cross-attention to the latents
    always stays standard softmax attention.
    """

    vocab_size: int
    categories: int
    memory_dim: int
    sectors: int = 8
    num_actions: int = 4
    d_model: int = 64
    heads: int = 4
    layers: int = 2
    queries: int = 4
    max_words: int = 128
    recent: int = 4
    stride: int = 4
    max_age: int = 64
    memory_tokens: int = 3
    instruction_slots: int = 8
    subgoals: int = 12
    dropout: float = 0.0
    self_mixer: str = "softmax"


class MixerSelfAttention(nn.Module):
    """Multi-head self-attention whose token mixing is a registered mixer (``mixer``, non-causal): the
    projections of :class:`torch.nn.MultiheadAttention` (as many parameters) around
    ``create_token_mixer(mixer, causal=False)``. Called like it: ``attn(x, x, x)[0]`` is the output."""

    def __init__(self, d: int, heads: int, mixer: str) -> None:
        super().__init__()
        if d % heads:
            raise ValueError(f"d_model {d} is not divisible by heads {heads}")
        self.heads = heads
        self.in_proj = nn.Linear(d, 3 * d)
        self.out_proj = nn.Linear(d, d)
        self.mixer = create_token_mixer(mixer, causal=False)

    def forward(self, x: torch.Tensor, *_: torch.Tensor, **__: object) -> tuple[torch.Tensor, None]:
        b, n, d = x.shape
        q, k, v = self.in_proj(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        return self.out_proj(self.mixer(q, k, v).transpose(1, 2).reshape(b, n, d)), None


class _Block(nn.Module):
    """Pre-norm self-attention over the queries (``self_mixer``), cross-attention to the latents, then an
    MLP."""

    def __init__(self, d: int, heads: int, dropout: float, self_mixer: str = "softmax") -> None:
        super().__init__()
        self.norm_self = nn.LayerNorm(d)
        self.self_attn = (nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
                          if self_mixer == "softmax" else MixerSelfAttention(d, heads, self_mixer))
        self.norm_query = nn.LayerNorm(d)
        self.norm_latent = nn.LayerNorm(d)
        self.cross_attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.norm_mlp = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x: torch.Tensor, latents: torch.Tensor, latent_pad: torch.Tensor) -> torch.Tensor:
        y = self.norm_self(x)
        x = x + self.self_attn(y, y, y, need_weights=False)[0]
        kv = self.norm_latent(latents)
        x = x + self.cross_attn(self.norm_query(x), kv, kv, key_padding_mask=latent_pad, need_weights=False)[0]
        return x + self.mlp(self.norm_mlp(x))


class FlamePolicy(nn.Module):
    """The policy network (see the module docstring); ``config`` sizes it."""

    def __init__(self, config: PolicyConfig) -> None:
        super().__init__()
        c = self.config = config
        d = c.d_model
        self.word = nn.Embedding(c.vocab_size, d, padding_idx=0)
        self.word_position = nn.Embedding(c.max_words, d)
        self.instruction = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(d, c.heads, 4 * d, c.dropout, batch_first=True, norm_first=True), 1,
            enable_nested_tensor=False,
        )
        self.slot_queries = nn.Parameter(torch.zeros(c.instruction_slots, d))
        self.slot_attn = nn.MultiheadAttention(d, c.heads, dropout=c.dropout, batch_first=True)
        self.slot_norm = nn.LayerNorm(d)
        self.sector_in = nn.Linear(c.categories + 1, d)
        self.sector_embedding = nn.Embedding(c.sectors, d)
        self.summary_in = nn.Linear(c.sectors * (c.categories + 1), d)
        self.age_embedding = nn.Embedding(c.max_age + 1, d)
        self.memory_in = nn.Linear(c.memory_dim + EXTRA_MEMORY_FEATURES + 1, d)
        self.subgoal_fields = nn.ModuleList(nn.Embedding(n, d, padding_idx=0) for n in subgoal_sizes(c.categories))
        self.subgoal_position = nn.Embedding(max(c.subgoals, 1), d)
        self.subgoal_view = nn.Sequential(nn.Linear(3 * c.sectors, d), nn.GELU(), nn.Linear(d, d))
        self.kind = nn.Embedding(5, d)
        self.state_in = nn.Linear(d, d)
        self.query_slots = nn.Parameter(torch.zeros(c.queries - 1, d))
        self.memory_query_net = nn.Linear(2 * d, c.memory_dim)
        self.blocks = nn.ModuleList(_Block(d, c.heads, c.dropout, c.self_mixer) for _ in range(c.layers))
        self.norm_out = nn.LayerNorm(d)
        self.recurrence = nn.GRUCell(d, d)
        self.head = nn.Linear(d, c.num_actions)
        nn.init.normal_(self.query_slots, std=0.02)
        nn.init.normal_(self.slot_queries, std=0.02)
        self._layout: tuple[int, ...] = ()
        for block in self.blocks:      # segment maps for attention probes (vlnkit.perception.attention)
            block.cross_attn.segment_map = self.latent_segments
            block.self_attn.segment_map = self.query_segments

    def encode_instruction(self, word_ids: torch.Tensor) -> torch.Tensor:
        """The instruction's ``(B, instruction_slots, d)`` latent tokens for ``(B, L)`` word ids (0 = padding)."""
        pad = word_ids == 0
        positions = torch.arange(word_ids.shape[1], device=word_ids.device).clamp(max=self.config.max_words - 1)
        words = self.instruction(self.word(word_ids) + self.word_position(positions)[None], src_key_padding_mask=pad)
        queries = self.slot_queries[None].expand(word_ids.shape[0], -1, -1)
        slots = self.slot_attn(queries, words, words, key_padding_mask=pad, need_weights=False)[0]
        return self.slot_norm(queries + slots)

    def encode_subgoals(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The static part of the sub-goal tokens ``(B, G, d)``, their padding mask ``(B, G)`` and the
        categories they name ``(B, G, 2)`` (landmark and gate, ``-1`` for none) from ``(B, G, 7)`` sub-goal
        rows (all-zero rows are padding; ``G`` is 0 when the policy reads no sub-goals). Computed once per
        episode; :meth:`subgoal_tokens` adds what the current panorama shows of them."""
        rows = rows[:, : self.config.subgoals]
        tokens = sum(embed(rows[..., i]) for i, embed in enumerate(self.subgoal_fields))
        positions = torch.arange(rows.shape[1], device=rows.device)
        tokens = tokens + self.subgoal_position(positions)[None] + self.kind.weight[4]
        return tokens, rows[..., 0] == 0, rows[..., [4, 5]] - 1

    def subgoal_tokens(self, subgoals: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
                       panorama: torch.Tensor, links: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """This step's sub-goal tokens and padding: each static token (:meth:`encode_subgoals`) plus a small
        MLP of the panorama's closeness, per sector, of the landmark and gate categories it names and of the
        link bins ``(B, S)``, so "turn left at the cafe" reads, in one token, both where the cafe is in the
        current view and whether a street leaves on that side."""
        tokens, pad, categories = subgoals
        b, g = categories.shape[:2]
        if g == 0:
            return tokens, pad
        named = categories >= 0
        index = categories.clamp(min=0).reshape(b, 1, g * 2).expand(-1, panorama.shape[1], -1)
        seen = torch.gather(panorama, 2, index).reshape(b, -1, g, 2) * named[:, None].float()
        seen = seen.permute(0, 2, 3, 1).reshape(b, g, -1)
        view = torch.cat([seen, links[:, None].expand(-1, g, -1)], dim=-1)
        return tokens + self.subgoal_view(view), pad

    def visual_tokens(self, panorama: torch.Tensor, links: torch.Tensor) -> torch.Tensor:
        """Sector tokens ``(B, S, d)`` from panoramas ``(B, S, C)`` and link bins ``(B, S)``."""
        x = torch.cat([panorama, links[..., None]], dim=-1)
        sectors = torch.arange(self.config.sectors, device=panorama.device)
        return self.sector_in(x) + self.sector_embedding(sectors)[None] + self.kind.weight[1]

    def summary(self, panorama: torch.Tensor, links: torch.Tensor) -> torch.Tensor:
        """The history token ``(B, d)`` of one step."""
        return self.summary_in(torch.cat([panorama, links[..., None]], dim=-1).flatten(1))

    def memory_query(self, hidden: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        """``Linear([h_{t-1} ; mean visual token])``: the query ``(B, memory_dim)`` for memory retrieval."""
        return self.memory_query_net(torch.cat([hidden, visual.mean(dim=1)], dim=-1))

    def step(
        self,
        instruction: torch.Tensor,
        subgoals: tuple[torch.Tensor, torch.Tensor],
        visual: torch.Tensor,
        history: torch.Tensor,
        history_ages: torch.Tensor,
        history_pad: torch.Tensor,
        memory: torch.Tensor,
        query: torch.Tensor,
        hidden: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One decision: ``(logits (B, A), h_t (B, d))``.

        ``instruction`` are the instruction's slots, ``subgoals`` this step's sub-goal tokens and padding
        (:meth:`subgoal_tokens`); ``history`` ``(B, H, d)`` are earlier summary tokens with ``history_ages`` ``(H,)`` (steps back)
        and padding ``history_pad`` ``(B, H)``; ``memory`` ``(B, k, F)`` are memory rows (all-zero rows
        are padding); ``query`` the memory query of this step.
        """
        c = self.config
        ages = history_ages.clamp(max=c.max_age)
        hist = history + self.age_embedding(ages)[None] + self.kind.weight[2]
        valid = memory[..., -1] > 0
        cosine = F.cosine_similarity(memory[..., : c.memory_dim], query[:, None, :], dim=-1, eps=1e-6)
        mem = self.memory_in(torch.cat([memory, (cosine * valid)[..., None]], dim=-1)) + self.kind.weight[3]
        goals, goal_pad = subgoals
        latents = torch.cat([instruction + self.kind.weight[0], goals, visual, hist, mem], dim=1)
        b = visual.shape[0]
        fixed = torch.zeros(b, instruction.shape[1], dtype=torch.bool, device=visual.device)
        seen = torch.zeros(b, visual.shape[1], dtype=torch.bool, device=visual.device)
        pad = torch.cat([fixed, goal_pad, seen, history_pad, ~valid], dim=1)
        state = self.state_in(hidden)
        x = torch.cat([state[:, None, :], self.query_slots[None].expand(b, -1, -1)], dim=1)
        self._layout = (instruction.shape[1], goals.shape[1], visual.shape[1], hist.shape[1], mem.shape[1])
        for block in self.blocks:
            x = block(x, latents, pad)
        h = self.recurrence(self.norm_out(x[:, 0]), hidden)
        return self.head(h), h

    def latent_segments(self) -> tuple[dict[str, slice], dict[str, slice]]:
        """The token segment map of the last :meth:`step`'s cross-attention, for attention probes
        (:mod:`vlnkit.perception.attention`): latents ``instruction``, ``subgoals``, ``view0`` ... (one per
        sector), ``history``, ``memory``; queries ``state`` and ``slots``."""
        sizes = list(self._layout)
        names = ["instruction", "subgoals", "views", "history", "memory"]
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        latents = {n: slice(a, a + size) for n, a, size in zip(names, starts, sizes) if n != "views"}
        latents.update({f"view{i}": slice(starts[2] + i, starts[2] + i + 1) for i in range(sizes[2])})
        return latents, self.query_segments()[0]

    def query_segments(self) -> tuple[dict[str, slice], dict[str, slice]]:
        """The segment map of the self-attention over the queries: ``state`` and ``slots``."""
        queries = {"state": slice(0, 1), "slots": slice(1, self.config.queries)}
        return queries, queries
