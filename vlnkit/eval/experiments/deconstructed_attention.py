"""Small language models with relaxed attention (``vlnkit experiment deconstructed_attention``).

Re-implements the experiment of Xue, Moosavi, Aletras, "Deconstructing Attention: Investigating Design
Principles for Effective Language Modeling" (arXiv 2510.11602), from its description in
``docs/perception-attention.md`` section 10, at toy scale on text the platform owns.

Model (:class:`DeconLM`): a causal decoder-only LM, pre-norm (RMSNorm) blocks of multi-head attention (MHA,
projections W_Q, W_K, W_V, W_O without bias) and a SwiGLU MLP, rotary or learned positions, tied input and
output embeddings. Each layer picks a token mixer of :mod:`vlnkit.perception.kernels` by name and a Q/K source:

- ``hidden`` (standard): Q, K from the layer's own input;
- ``static`` (StaticEmbQK): Q, K from the static input embeddings ``Emb(t)`` of the current sequence (plus
  the learned positions when positions are learned), so the maps depend only on the token ids;
- ``random`` (RndEmbQK): Q, K from a fixed random sequence ``eps ~ N(0, sigma^2 I)`` passed through the
  stack's blocks up to that layer;
- ``fixed`` (FixedSeqQK): Q, K from a fixed text (the first tokens of the training corpus, the paper's first
  2048 tokens of FineWeb) passed through the stack.

With ``random`` and ``fixed`` the attention maps are the same for every input (one map, broadcast over the
batch). V always comes from the current hidden state. The *variants* (config ``variant_specs``) pair a mixer
with a source: ``softmax`` (standard), ``mlp`` (no token mixing), ``taylor`` (Approx), ``key_only``
(Non-approx) with ``hidden``; ``rnd_emb``, ``fixed_seq``, ``static_emb`` with softmax. Rotary embeddings are
applied only for mixers whose scores compare a query with other positions (``pairwise``; not ``mlp``,
``key_only``).

Schedules (:func:`variant_layers`) say which layers are the variant, the rest being standard:
``uniform`` (all), ``hybrid`` (odd layers, 1-indexed), ``skip`` (the trained hybrid model evaluated with its
variant layers removed: nothing is trained for it), and the paper's named schedules scaled to the depth L
(the sheet's layer ranges for L = 24): ``odd`` (= hybrid), ``even``, ``top`` (layers > L/2), ``middle``
(round(L/4) < l <= round(3L/4)), ``bottom`` (l <= round(L/4)), ``quarter`` (the paper's "25%": standard only at
n = max(1, round(L/4)) evenly spaced layers ceil(jL/n), i.e. 4, 8, ..., 24), ``first`` (standard only at layer
1), ``last`` (only at L), ``bilateral`` (1 and L). The standard variant (``softmax``) is the same model under
every trained schedule and is trained once.

Parameter counts: every variant and schedule has the same modules (the random sequence and the fixed text are
buffers), so the stored parameter counts are equal, as in the paper (MHA, parameter-matched MLP). The ``mlp``
mixer leaves W_K unused (q plays FC_Gt, v FC_Up, W_O FC_Dn), so its *used* parameters are d^2 fewer per mlp
layer; the table reports both (the paper instead widens its MLP to match).

Corpus (:func:`load_corpus`): the synthetic city's instructions (``navigation_text`` of the built-in city's
``data/train.json``, JSON lines), the synthetic houses' R2R-CE training instructions
(``instruction.instruction_text`` of ``train/train.json.gz``) and any local text files (``corpus.files``, one
document per non-empty line). Documents are shuffled with the seed and the last ``val_fraction`` held out.
Tokenizer (:class:`Tokenizer`): ``char`` (default; every character of the training part, ``<unk>`` = 0 for
characters only in the validation part) or ``word`` (lower-case words and punctuation marks); documents end
with a newline token. Training samples random windows of the training stream (the same windows for every run,
drawn from ``(seed, step)``); validation perplexity is ``exp`` of the mean next-token NLL over consecutive
windows of the validation stream. A uniform model's perplexity is the vocabulary size.

Indicators (:mod:`vlnkit.perception.kernels.deconstructed`): entropy, concentration, HeadDiv, Sink, LocFoc_0..3
per layer from the maps of the first validation windows, with entropy, concentration and HeadDiv min-max
normalised across layers; reported for the standard model (and stored for every run that has maps).

Every (variant, schedule) run is resumable: its state is saved every ``checkpoint_every`` steps and when done.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from vlnkit.eval.experiments.runner import ExperimentContext, ExperimentResult, Table
from vlnkit.perception.kernels import create_token_mixer
from vlnkit.perception.kernels.deconstructed import attention_indicators, minmax_normalise, softmax_attention_map

QK_SOURCES = ("hidden", "static", "random", "fixed")
"""Where a layer's queries and keys come from (see the module docstring)."""

TRAINED_SCHEDULES = ("uniform", "hybrid", "odd", "even", "top", "middle", "bottom", "quarter", "first", "last",
                     "bilateral")
"""Schedules that train a model; ``skip`` evaluates the hybrid one."""

SCHEDULES = (*TRAINED_SCHEDULES, "skip")

STANDARD = "softmax"
"""The name of the standard variant (softmax attention, Q/K from the hidden state)."""


# ----------------------------------------------------------------------------------------------------------
# Corpus and tokenizer
# ----------------------------------------------------------------------------------------------------------

def city_instructions(seed: int, size: str = "small") -> list[str]:
    """The ``navigation_text`` of every episode of the built-in synthetic city's ``data/train.json``."""
    from vlnkit.envs.synth import default_city

    path = default_city(seed, size) / "data" / "train.json"
    texts = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                text = json.loads(line).get("navigation_text")
                if text:
                    texts.append(str(text))
    return texts


def house_instructions(release: str | Path) -> list[str]:
    """The instruction texts of the training split of an R2R-CE release (``train/train.json.gz``)."""
    from vlnkit.envs.datasets.vlnce import read_vlnce_split

    split = read_vlnce_split(Path(release) / "train" / "train.json.gz", require_vocab=False, require_goals=False)
    return [e.instruction for e in split.episodes]


def text_file_documents(path: str | Path) -> list[str]:
    """The non-empty lines of a local text file, one document each."""
    return [line.strip() for line in Path(path).expanduser().read_text(encoding="utf-8").splitlines() if line.strip()]


def load_corpus(corpus: DictConfig) -> list[str]:
    """The documents of ``corpus``: the cities' instructions (``city_seeds``, ``city_size``), the houses'
    (``houses_release``, or the built-in release ``houses_seed``/``houses_count``; none with count 0) and the
    lines of ``files``."""
    docs: list[str] = []
    for seed in corpus.city_seeds:
        docs += city_instructions(int(seed), str(corpus.city_size))
    if corpus.houses_release is not None:
        docs += house_instructions(str(corpus.houses_release))
    elif int(corpus.houses_count) > 0:
        from vlnkit.envs.synth.houses import default_houses

        docs += house_instructions(default_houses(int(corpus.houses_seed), int(corpus.houses_count)))
    for path in corpus.files:
        docs += text_file_documents(str(path))
    if len(docs) < 2:
        raise ValueError(f"the corpus holds {len(docs)} documents; need at least 2 for a validation split")
    return docs


def split_documents(docs: Sequence[str], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Shuffle ``docs`` with ``seed`` and hold out the last ``val_fraction`` (at least one) for validation."""
    order = torch.randperm(len(docs), generator=torch.Generator().manual_seed(seed)).tolist()
    n_val = min(len(docs) - 1, max(1, round(len(docs) * val_fraction)))
    shuffled = [docs[i] for i in order]
    return shuffled[:-n_val], shuffled[-n_val:]


_WORD = re.compile(r"[a-z0-9']+|[^\sa-z0-9']")


class Tokenizer:
    """A character- or word-level tokenizer built from the training documents.

    ``kind="char"``: every character; ``kind="word"``: lower-case words and single punctuation marks. Id 0 is
    ``<unk>`` (tokens absent from the training part), the others are the training tokens in sorted order, the
    newline ending every document among them.
    """

    def __init__(self, train_docs: Sequence[str], kind: str = "char") -> None:
        if kind not in ("char", "word"):
            raise ValueError(f"tokenizer must be 'char' or 'word', got {kind!r}")
        self.kind = kind
        tokens = sorted({t for doc in train_docs for t in self.split(doc)} | {"\n"})
        self.itos = ["<unk>", *tokens]
        self.stoi = {t: i for i, t in enumerate(self.itos)}

    def split(self, doc: str) -> list[str]:
        """The tokens of one document (without its end)."""
        return list(doc) if self.kind == "char" else _WORD.findall(doc.lower())

    def encode(self, docs: Sequence[str]) -> Tensor:
        """The token ids of ``docs`` as one stream, each document followed by the newline token."""
        ids = [self.stoi.get(t, 0) for doc in docs for t in [*self.split(doc), "\n"]]
        return torch.tensor(ids, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.itos)


def training_batch(stream: Tensor, batch: int, seq_len: int, seed: int, step: int) -> tuple[Tensor, Tensor]:
    """Random windows of ``seq_len + 1`` tokens of ``stream``, drawn from ``(seed, step)`` only (every run sees
    the same batches): inputs and next-token targets [batch, seq_len]."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
    starts = torch.randint(0, len(stream) - seq_len - 1, (batch,), generator=gen)
    windows = torch.stack([stream[s:s + seq_len + 1] for s in starts.tolist()])
    return windows[:, :-1], windows[:, 1:]


def validation_windows(stream: Tensor, seq_len: int, max_windows: int | None) -> tuple[Tensor, Tensor]:
    """Consecutive non-overlapping windows of the validation stream (at most ``max_windows``): inputs, targets."""
    n = (len(stream) - 1) // seq_len
    if n < 1:
        raise ValueError(f"the validation stream ({len(stream)} tokens) is shorter than seq_len + 1 = {seq_len + 1}")
    n = n if max_windows is None else min(n, max_windows)
    x = stream[: n * seq_len].view(n, seq_len)
    y = stream[1: n * seq_len + 1].view(n, seq_len)
    return x, y


# ----------------------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LayerSpec:
    """One layer's token mixer (registered name and config) and Q/K source."""

    mixer: str = STANDARD
    params: tuple[tuple[str, Any], ...] = ()
    qk: str = "hidden"


def rotary(x: Tensor, base: float = 10000.0) -> Tensor:
    """Rotary position embedding of per-head vectors ``x`` [B, H, N, D] at positions 0..N-1 (halves rotated)."""
    n, d = x.shape[-2], x.shape[-1]
    inv = base ** (-torch.arange(0, d // 2, device=x.device, dtype=torch.float32) * 2.0 / d)
    angles = torch.arange(n, device=x.device, dtype=torch.float32)[:, None] * inv[None]
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    x1, x2 = x[..., : d // 2], x[..., d // 2:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class Attention(nn.Module):
    """Multi-head attention whose token mixing is a registered mixer and whose Q, K may come from another
    sequence than V (``qk_input``; a batch of one is broadcast)."""

    def __init__(self, d_model: int, heads: int, spec: LayerSpec, rope: bool) -> None:
        super().__init__()
        if d_model % heads:
            raise ValueError(f"d_model {d_model} is not a multiple of heads {heads}")
        self.heads = heads
        self.spec = spec
        self.wq, self.wk, self.wv, self.wo = (nn.Linear(d_model, d_model, bias=False) for _ in range(4))
        self.mixer = create_token_mixer(spec.mixer, **dict(spec.params))
        self.rope = rope and getattr(self.mixer, "pairwise", True)

    def _heads(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        return x.view(b, n, self.heads, d // self.heads).transpose(1, 2)

    def qk(self, qk_input: Tensor) -> tuple[Tensor, Tensor]:
        """Per-head queries and keys [B, H, N, D] from ``qk_input`` (rotary applied when enabled)."""
        q, k = self._heads(self.wq(qk_input)), self._heads(self.wk(qk_input))
        return (rotary(q), rotary(k)) if self.rope else (q, k)

    def attention_map(self, q: Tensor, k: Tensor) -> Tensor | None:
        """The map the mixer applies to the values, or ``None`` for a mixer without one (``mlp``)."""
        if self.spec.mixer == STANDARD:
            return softmax_attention_map(q, k, self.mixer.causal, self.mixer.scale)
        fn = getattr(self.mixer, "attention_map", None)
        return None if fn is None else fn(q, k)

    def forward(self, x: Tensor, qk_input: Tensor, record: list[Tensor | None] | None = None) -> Tensor:
        b, n, _ = x.shape
        q, k = self.qk(qk_input[:, :n])
        if q.shape[0] != b:
            q, k = q.expand(b, -1, -1, -1), k.expand(b, -1, -1, -1)
        if record is not None:
            record.append(self.attention_map(q, k))
        out = self.mixer(q, k, self._heads(self.wv(x)))
        return self.wo(out.transpose(1, 2).reshape(b, n, -1))


class Block(nn.Module):
    """Pre-norm block: ``x + attn(norm(x))`` then ``x + SwiGLU(norm(x))``. The Q/K input is normalised by
    the same norm as the block's input."""

    def __init__(self, d_model: int, heads: int, ffn_hidden: int, spec: LayerSpec, rope: bool) -> None:
        super().__init__()
        self.norm1 = nn.RMSNorm(d_model)
        self.attn = Attention(d_model, heads, spec, rope)
        self.norm2 = nn.RMSNorm(d_model)
        self.gate = nn.Linear(d_model, ffn_hidden, bias=False)
        self.up = nn.Linear(d_model, ffn_hidden, bias=False)
        self.down = nn.Linear(ffn_hidden, d_model, bias=False)

    def forward(self, x: Tensor, qk_input: Tensor | None = None, record: list[Tensor | None] | None = None) -> Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h if qk_input is None else self.norm1(qk_input), record)
        h = self.norm2(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


class DeconLM(nn.Module):
    """The decoder-only LM of the experiment: layer ``l`` uses ``specs[l]`` (mixer and Q/K source).

    ``fixed_tokens`` (needed by a ``fixed`` layer) is the fixed text whose stream gives the Q/K of FixedSeqQK
    layers; a ``random`` layer uses a fixed ``N(0, random_std^2)`` sequence drawn from ``seed``. Both streams are
    at least ``max_len`` long and pass through all blocks as ordinary self-attention.
    """

    def __init__(self, vocab: int, specs: Sequence[LayerSpec], d_model: int, heads: int, ffn_hidden: int,
                 max_len: int, positions: str = "rotary", fixed_tokens: Tensor | None = None,
                 random_std: float = 0.02, init_std: float = 0.02, seed: int = 0) -> None:
        super().__init__()
        if positions not in ("rotary", "learned"):
            raise ValueError(f"positions must be 'rotary' or 'learned', got {positions!r}")
        bad = [s.qk for s in specs if s.qk not in QK_SOURCES]
        if bad:
            raise ValueError(f"unknown Q/K source {bad[0]!r}; expected one of {QK_SOURCES}")
        self.specs = list(specs)
        self.max_len = max_len
        self.embed = nn.Embedding(vocab, d_model)
        self.pos = nn.Embedding(max_len, d_model) if positions == "learned" else None
        self.blocks = nn.ModuleList(Block(d_model, heads, ffn_hidden, s, positions == "rotary") for s in specs)
        self.norm = nn.RMSNorm(d_model)
        gen = torch.Generator().manual_seed(seed)
        for p in self.parameters():
            if p.dim() > 1:
                with torch.no_grad():
                    p.copy_(torch.randn(p.shape, generator=gen) * init_std)
        sources = {s.qk for s in specs}
        self.register_buffer("random_seq", torch.randn(1, max_len, d_model, generator=gen) * random_std
                             if "random" in sources else None)
        fixed = None
        if "fixed" in sources:
            if fixed_tokens is None or len(fixed_tokens) < max_len:
                raise ValueError(f"a fixed layer needs fixed_tokens of at least max_len = {max_len} tokens")
            fixed = fixed_tokens[:max_len].clone().view(1, -1)
        self.register_buffer("fixed_tokens", fixed)

    def input_embeddings(self, ids: Tensor) -> Tensor:
        """The static input embeddings of ``ids`` [B, N] (token plus learned position when learned)."""
        e = self.embed(ids)
        if self.pos is not None:
            e = e + self.pos(torch.arange(ids.shape[1], device=ids.device))
        return e

    def forward(self, ids: Tensor, skip: Sequence[int] = (), record: list[Tensor | None] | None = None) -> Tensor:
        """Next-token logits [B, N, vocab] of ``ids`` [B, N], with the layers in ``skip`` (0-indexed) removed;
        ``record`` collects each kept layer's attention map (``None`` for mixers without one)."""
        if ids.shape[1] > self.max_len:
            raise ValueError(f"sequence of {ids.shape[1]} tokens exceeds max_len {self.max_len}")
        x = e = self.input_embeddings(ids)
        stream = None
        if self.random_seq is not None:
            stream = self.random_seq
        elif self.fixed_tokens is not None:
            stream = self.input_embeddings(self.fixed_tokens)
        for i, (block, spec) in enumerate(zip(self.blocks, self.specs)):
            if i in skip:
                continue
            qk_input = {"hidden": None, "static": e, "random": stream, "fixed": stream}[spec.qk]
            x = block(x, qk_input, record)
            if stream is not None:
                stream = block(stream)
        return self.norm(x) @ self.embed.weight.T

    def loss(self, ids: Tensor, targets: Tensor, skip: Sequence[int] = ()) -> Tensor:
        """Mean next-token cross-entropy."""
        logits = self(ids, skip)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def variant_layers(schedule: str, num_layers: int) -> list[int]:
    """The 0-indexed layers that are the variant under ``schedule`` for a stack of ``num_layers`` (see the
    module docstring; ``skip`` and ``hybrid`` both name the odd layers, 1-indexed)."""
    n = num_layers
    layers = range(1, n + 1)
    q1, q3 = max(1, round(n / 4)), round(3 * n / 4)
    quarter_std = {math.ceil(j * n / max(1, round(n / 4))) for j in range(1, max(1, round(n / 4)) + 1)}
    rules = {
        "uniform": lambda l: True,
        "hybrid": lambda l: l % 2 == 1,
        "skip": lambda l: l % 2 == 1,
        "odd": lambda l: l % 2 == 1,
        "even": lambda l: l % 2 == 0,
        "top": lambda l: l > n // 2,
        "middle": lambda l: q1 < l <= q3,
        "bottom": lambda l: l <= q1,
        "quarter": lambda l: l not in quarter_std,
        "first": lambda l: l != 1,
        "last": lambda l: l != n,
        "bilateral": lambda l: l not in (1, n),
    }
    if schedule not in rules:
        raise ValueError(f"unknown schedule {schedule!r}; expected one of {SCHEDULES}")
    return [l - 1 for l in layers if rules[schedule](l)]


def layer_specs(variant: LayerSpec, schedule: str, num_layers: int) -> list[LayerSpec]:
    """Every layer's spec: ``variant`` on the schedule's variant layers, standard elsewhere."""
    chosen = set(variant_layers(schedule, num_layers))
    return [variant if i in chosen else LayerSpec() for i in range(num_layers)]


def variant_spec(cfg: DictConfig, name: str) -> LayerSpec:
    """The :class:`LayerSpec` of variant ``name`` from ``cfg.variant_specs``."""
    if name not in cfg.variant_specs:
        raise KeyError(f"unknown variant {name!r}; defined in variant_specs: {sorted(cfg.variant_specs)}")
    spec = cfg.variant_specs[name]
    params = spec.get("params")
    params = {} if params is None else OmegaConf.to_container(params, resolve=True)
    return LayerSpec(str(spec.mixer), tuple(sorted(params.items())), str(spec.get("qk", "hidden")))


def build_model(cfg: DictConfig, vocab: int, specs: Sequence[LayerSpec], fixed_tokens: Tensor, seed: int) -> DeconLM:
    """A :class:`DeconLM` of the config's sizes (``cfg.model``) with the given layer specs."""
    m = cfg.model
    d = int(m.d_model)
    ffn = int(m.ffn_hidden) if m.ffn_hidden is not None else max(8, round(8 * d / 3 / 8) * 8)
    return DeconLM(vocab, specs, d, int(m.heads), ffn, int(cfg.seq_len), str(m.positions), fixed_tokens,
                   float(m.random_std), float(m.init_std), seed)


def used_parameters(model: DeconLM, ids: Tensor) -> int:
    """How many parameters a forward on ``ids`` uses (receive a gradient)."""
    model.zero_grad(set_to_none=True)
    model(ids).sum().backward()
    used = sum(p.numel() for p in model.parameters() if p.grad is not None)
    model.zero_grad(set_to_none=True)
    return used


# ----------------------------------------------------------------------------------------------------------
# Training and evaluation
# ----------------------------------------------------------------------------------------------------------

def lr_at(step: int, cfg: DictConfig) -> float:
    """Linear warm-up then cosine decay over half a cycle (the paper's schedule) to 0 at ``cfg.steps``."""
    peak, warm, total = float(cfg.train.lr), int(cfg.train.warmup), int(cfg.steps)
    if step < warm:
        return peak * (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    return peak * 0.5 * (1.0 + math.cos(math.pi * progress))


@torch.no_grad()
def evaluate(model: DeconLM, x: Tensor, y: Tensor, batch: int, skip: Sequence[int] = ()) -> float:
    """Mean next-token NLL (nats) over all targets of the windows ``x, y``."""
    model.eval()
    total = 0.0
    for i in range(0, len(x), batch):
        logits = model(x[i:i + batch], skip)
        total += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y[i:i + batch].reshape(-1),
                                       reduction="sum"))
    return total / y.numel()


@torch.no_grad()
def layer_indicators(model: DeconLM, x: Tensor) -> list[dict[str, Any]] | None:
    """Per layer, the indicators of its attention maps on ``x`` (heads averaged; ``per_head`` lists kept),
    with entropy, concentration and HeadDiv min-max normalised across layers; ``None`` when a layer has no
    map (an ``mlp`` layer)."""
    model.eval()
    maps: list[Tensor | None] = []
    model(x, record=maps)
    if any(a is None for a in maps):
        return None
    rows = []
    for layer, attn in enumerate(maps):
        ind = attention_indicators(attn)
        row: dict[str, Any] = {"layer": layer + 1}
        for key, value in ind.items():
            row[key] = float(value.mean())
            if value.dim():
                row[f"{key}_per_head"] = [float(v) for v in value]
        rows.append(row)
    for key in ("entropy", "concentration", "head_div"):
        for row, norm in zip(rows, minmax_normalise([r[key] for r in rows])):
            row[f"{key}_norm"] = norm
    return rows


def train_run(cfg: DictConfig, ctx: ExperimentContext, name: str, specs: Sequence[LayerSpec], vocab: int,
              train_stream: Tensor, val: tuple[Tensor, Tensor]) -> tuple[DeconLM, dict[str, Any]]:
    """Train (or finish, or load) one (variant, schedule) model; the state ``name`` holds the model, optimiser,
    step and loss curve every ``cfg.checkpoint_every`` steps and the metrics once done. Returns the model (on
    the CPU, eval mode) and its metrics: validation NLL and perplexity, parameter counts, the training-loss
    curve (mean per ``cfg.log_every`` steps) and the per-layer indicators."""
    model = build_model(cfg, vocab, specs, train_stream, ctx.seed)
    state = ctx.load_state(name)
    if state is not None and state.get("metrics") is not None:
        model.load_state_dict(state["model"])
        return model.eval(), state["metrics"]
    probe = training_batch(train_stream, 2, int(cfg.seq_len), ctx.seed, -1)[0]
    params, used = sum(p.numel() for p in model.parameters()), used_parameters(model, probe)
    model.to(ctx.device)
    t = cfg.train
    optim = torch.optim.AdamW(model.parameters(), lr=float(t.lr), betas=tuple(float(b) for b in t.betas),
                              eps=float(t.eps), weight_decay=float(t.weight_decay))
    step, curve = 0, []
    if state is not None:
        model.load_state_dict(state["model"])
        optim.load_state_dict(state["optim"])
        step, curve = int(state["step"]), list(state["curve"])
    steps, log_every, running = int(cfg.steps), int(cfg.log_every), 0.0
    model.train()
    with ctx.bar(steps, desc=name, initial=step) as bar:
        while step < steps:
            x, y = (a.to(ctx.device) for a in training_batch(train_stream, int(t.batch), int(cfg.seq_len),
                                                             ctx.seed, step))
            for group in optim.param_groups:
                group["lr"] = lr_at(step, cfg)
            loss = model.loss(x, y)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), float(t.grad_clip))
            optim.step()
            step += 1
            running += float(loss.detach())
            if step % log_every == 0:
                curve.append(running / log_every)
                running = 0.0
            bar.update(1)
            if step % int(cfg.checkpoint_every) == 0 and step < steps:
                ctx.save_state(name, {"model": model.state_dict(), "optim": optim.state_dict(), "step": step,
                                      "curve": curve})
    model = model.cpu().eval()
    nll = evaluate(model, *val, int(t.batch))
    indicators = layer_indicators(model, val[0][: int(cfg.indicator_windows)])
    metrics = {"val_nll": nll, "val_ppl": math.exp(nll), "params": params, "params_used": used,
               "train_curve": curve, "variant_layers": [i + 1 for i, s in enumerate(specs) if s != LayerSpec()],
               "indicators": indicators}
    ctx.save_state(name, {"model": model.state_dict(), "metrics": metrics})
    return model, metrics


# ----------------------------------------------------------------------------------------------------------
# The experiment
# ----------------------------------------------------------------------------------------------------------

def plan_runs(variants: Sequence[str], schedules: Sequence[str]) -> list[tuple[str, str]]:
    """The (variant, schedule) models to train: the standard variant once (``uniform``), every other variant
    under each trained schedule, plus ``hybrid`` wherever ``skip`` is asked for."""
    unknown = [s for s in schedules if s not in SCHEDULES]
    if unknown:
        raise ValueError(f"unknown schedule {unknown[0]!r}; expected one of {SCHEDULES}")
    wanted = [s for s in TRAINED_SCHEDULES if s in schedules or (s == "hybrid" and "skip" in schedules)]
    runs = []
    for v in variants:
        if v == STANDARD:
            runs.append((v, "uniform"))
        else:
            runs += [(v, s) for s in wanted]
    return runs


def _plot(ctx: ExperimentContext, ppl: dict[str, dict[str, float]], schedules: Sequence[str], vocab: int,
          indicators: list[dict[str, Any]] | None) -> list[str]:
    """Validation perplexity per variant and schedule (grouped bars, log scale) and the standard model's
    indicators per layer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    ax = axes[0]
    names = list(ppl)
    width = 0.8 / max(1, len(schedules))
    for j, s in enumerate(schedules):
        xs = [i + j * width for i, n in enumerate(names) if s in ppl[n]]
        ys = [ppl[n][s] for n in names if s in ppl[n]]
        ax.bar(xs, ys, width=width, label=s)
    ax.axhline(vocab, color="grey", linestyle=":", linewidth=1, label="uniform model (vocab size)")
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(names))], names, rotation=30, fontsize=8)
    ax.set(yscale="log", ylabel="validation perplexity", title="Perplexity per variant and schedule")
    ax.legend(fontsize=7)
    ax = axes[1]
    if indicators:
        layers = [r["layer"] for r in indicators]
        for key in ("entropy_norm", "concentration_norm", "head_div_norm", "sink", "locfoc_0", "locfoc_1"):
            ax.plot(layers, [r[key] for r in indicators], marker="o", label=key)
        ax.set_xticks(layers)
        ax.legend(fontsize=7)
    ax.set(xlabel="layer", title="Standard model: attention indicators per layer")
    fig.tight_layout()
    fig.savefig(ctx.figure_path("perplexity.png"), dpi=120)
    plt.close(fig)
    return ["perplexity.png"]


def run(cfg: DictConfig, ctx: ExperimentContext) -> ExperimentResult:
    """Train the LM of every (variant, schedule), evaluate the skip models, and report validation perplexity
    and the standard model's per-layer attention indicators."""
    threads = torch.get_num_threads()
    if cfg.threads is not None:
        torch.set_num_threads(int(cfg.threads))
    try:
        return _run(cfg, ctx)
    finally:
        torch.set_num_threads(threads)


def _run(cfg: DictConfig, ctx: ExperimentContext) -> ExperimentResult:
    docs = load_corpus(cfg.corpus)
    train_docs, val_docs = split_documents(docs, float(cfg.corpus.val_fraction), ctx.seed)
    tok = Tokenizer(train_docs, str(cfg.tokenizer))
    train_stream, val_stream = tok.encode(train_docs), tok.encode(val_docs)
    val = validation_windows(val_stream, int(cfg.seq_len), cfg.eval_windows)
    variants = [str(v) for v in cfg.variants]
    schedules = [str(s) for s in cfg.schedules]
    num_layers = int(cfg.model.layers)

    runs: dict[str, dict[str, Any]] = {}
    models: dict[str, DeconLM] = {}
    for variant, schedule in plan_runs(variants, schedules):
        specs = layer_specs(variant_spec(cfg, variant), schedule, num_layers)
        key = f"{variant}/{schedule}"
        models[key], runs[key] = train_run(cfg, ctx, f"{variant}-{schedule}", specs, len(tok), train_stream, val)
    if "skip" in schedules:
        removed = variant_layers("skip", num_layers)
        for variant in variants:
            base = f"{variant}/uniform" if variant == STANDARD else f"{variant}/hybrid"
            nll = evaluate(models[base], *val, int(cfg.train.batch), skip=removed)
            runs[f"{variant}/skip"] = {**{k: runs[base][k] for k in ("params", "params_used")}, "val_nll": nll,
                                       "val_ppl": math.exp(nll), "removed_layers": [i + 1 for i in removed],
                                       "evaluated_from": base}

    def cell(variant: str, schedule: str) -> float | str:
        if variant == STANDARD and schedule != "skip":
            schedule = "uniform"
        r = runs.get(f"{variant}/{schedule}")
        return "-" if r is None else r["val_ppl"]

    relaxes = {"softmax": "none (standard)", "mlp": "token mixing", "taylor": "mathematical form (Approx)",
               "key_only": "mathematical form (Non-approx)", "rnd_emb": "sequence dependency",
               "fixed_seq": "sequence dependency", "static_emb": "current QK"}
    ppl_rows = []
    for v in variants:
        first = runs[f"{v}/{plan_runs([v], schedules)[0][1]}"]
        ppl_rows.append([v, relaxes.get(v, "-"), *(cell(v, s) for s in schedules), first["params"],
                         first["params_used"]])
    tables = [Table(
        title="Validation perplexity per variant and schedule",
        header=["variant", "relaxes", *schedules, "params", "params used"],
        rows=ppl_rows,
        note=(f"{tok.kind}-level tokens, vocabulary {len(tok)} (a uniform model's perplexity); "
              f"{len(train_docs)} training and {len(val_docs)} validation documents, {val[1].numel()} validation "
              f"targets; {num_layers} layers, d {int(cfg.model.d_model)}, seq {int(cfg.seq_len)}, {int(cfg.steps)} "
              f"steps. hybrid = odd layers (1-indexed) the variant; skip = the hybrid model with those layers "
              f"removed (for softmax: the standard model with its odd layers removed). The standard model is "
              f"the same under every trained schedule. params: of the variant's first trained model; "
              f"'params used' excludes W_K of its mlp layers (unused)."),
    )]
    standard = runs.get(f"{STANDARD}/uniform")
    indicators = standard["indicators"] if standard else None
    if indicators:
        keys = ["entropy", "entropy_norm", "concentration", "concentration_norm", "head_div", "head_div_norm",
                "sink", "locfoc_0", "locfoc_1", "locfoc_2", "locfoc_3"]
        tables.append(Table(
            title="Attention indicators per layer of the standard model",
            header=["layer", *keys],
            rows=[[r["layer"], *(r[k] for k in keys)] for r in indicators],
            note=(f"From the maps on the first {min(int(cfg.indicator_windows), len(val[0]))} validation windows, "
                  f"heads averaged; *_norm: min-max normalised across layers. Sink = mean attention to the "
                  f"window's first token; locfoc_N = mean attention at relative distance N."),
        ))
    ppl = {v: {s: c for s in schedules if isinstance(c := cell(v, s), float)} for v in variants}
    plots = _plot(ctx, ppl, schedules, len(tok), indicators)
    results = {
        "vocab_size": len(tok), "tokenizer": tok.kind, "train_documents": len(train_docs),
        "val_documents": len(val_docs), "train_tokens": len(train_stream), "val_targets": val[1].numel(),
        "perplexity": ppl, "runs": runs,
    }
    return ExperimentResult(results=results, tables=tables, plots=plots)
