"""``llm_attention``: SmolLM2's attention on the LLM agent's observations (#14 items 2 and 5): landmark
hallucination against vision-aware head divergence, and WAAD/FAI anchors against the instruction's landmarks.

SmolLM2-135M-Instruct runs through ``transformers`` (:func:`~vlnkit.agents.llm.transformers_llm.load_transformers_llm`,
the agent's own GGUF de-quantised) with probes on every attention layer (query heads after ``repeat_kv``).
For the first observation of each of ``episodes`` episodes of the synthetic city's ``split``, the prompt holds
the instruction and what is visible by direction (:func:`~vlnkit.agents.llm.prompt.visible_landmarks` on the
panorama features: the simulator's labels, as the LLM agent reads them) and asks which landmarks are seen;
the model answers greedily (``max_new_tokens``).

- **Hallucination and T-VHD** (VHR, He et al.): the answer is also read under the same prompt with the
  observation blanked. Per response token, T-VHD is the sum over layers of the ``vhd_top_k`` largest per-head
  distances between the two passes' head outputs. A mentioned landmark category is *hallucinated* when no
  direction shows it. Reported: the hallucination rate over mentions, and the mean T-VHD of grounded and of
  hallucinated mentions (the paper: hallucinated objects get low T-VHD).
- **Interventions** (``interventions``, each answer generated again with it on): ``vhr`` scales by
  ``alpha`` the top half of the heads by VHD at the first generated token (observation against blanked) in the
  second layer and the last 44% of layers (the paper's 1 + 14 of 32), fixed for the answer; ``paint`` adds
  ``alpha |z|`` to the logits of the observation's tokens in the last query row of layers 2 .. L-1. Reported
  per condition: mentions, hallucination rate and answer length.
- **WAAD/FAI** (Preplan-and-Anchor): over 5 evenly spaced layers of the middle third, the 30% of (layer, head)
  with the shortest and the longest span on the response rows form the local and global sets; FAI (``h_lo``,
  ``h_hi``) of every prompt token; reported: how much more often the top decile of FAI lands on the
  instruction's landmark words than a random prompt token does (the enrichment), and the mean WAAD.
"""

from __future__ import annotations

import math
import re
from contextlib import ExitStack
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from vlnkit.agents.llm.prompt import visible_landmarks
from vlnkit.agents.llm.transformers_llm import load_transformers_llm
from vlnkit.eval.experiments.runner import ExperimentContext, ExperimentResult, Table
from vlnkit.perception.attention import AttentionCall, Capture, Probe, attach
from vlnkit.perception.attention.analysis import fai, head_span, local_global_heads, waad
from vlnkit.perception.attention.interventions import HeadScale, paint_logits, vhr_heads

QUESTION = "In one sentence, name the landmarks you see and where they are."


def _observation_text(visible: dict[str, list[str]]) -> str:
    parts = [f"{direction}: {', '.join(names)}" for direction, names in visible.items() if names]
    return "; ".join(parts) if parts else "no landmarks"


def _prompt(tokenizer: Any, instruction: str, observation: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The chat prompt's token ids ``(1, P)`` and a boolean ``(P,)`` marking the observation's tokens."""
    messages = [{"role": "user", "content": f"Instruction: {instruction}\nWhat you see: {observation}\n{QUESTION}"}]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    start = text.index(f"What you see: {observation}") + len("What you see: ")
    end = start + len(observation)
    span = torch.tensor([a < end and b > start for a, b in encoded["offset_mapping"]])
    return torch.tensor([encoded["input_ids"]]), span


class _Paint(Probe):
    """PAINT on a causal LM: ``z + alpha |z|`` on the observation's keys in the last query row."""

    def __init__(self, observation: torch.Tensor, alpha: float) -> None:
        self.observation, self.alpha = observation, alpha

    def on_logits(self, call: AttentionCall, logits: torch.Tensor) -> torch.Tensor:
        local = torch.zeros(logits.shape[-1], dtype=torch.bool)
        local[: len(self.observation)] = self.observation
        return paint_logits(logits, local, torch.zeros_like(local), self.alpha, 0.0, row=-1)


def _generate(cfg: DictConfig, model: Any, ids: torch.Tensor, *attachments: tuple[str, Probe]) -> torch.Tensor:
    """The greedy answer's token ids with ``(site pattern, probe)`` attachments."""
    with torch.no_grad(), ExitStack() as stack:
        for pattern, probe in attachments:
            stack.enter_context(attach(model, pattern, probe))
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=int(cfg.max_new_tokens),
                             do_sample=False)
    return out[0, ids.shape[1]:]



def _vhr(cfg: DictConfig, model: Any, ids: torch.Tensor, blank: torch.Tensor) -> HeadScale:
    """VHR's head scales for one prompt: per chosen layer, the top half of the heads by VHD at the first
    generated token (the last prompt row, observation against blanked) get ``alpha``."""
    full, without = _capture(model, ids), _capture(model, blank)
    sites = sorted(full, key=_layer_index)
    layers = len(sites)
    chosen_layers = {1, *range(layers - round(0.44 * layers), layers)}
    scales = {}
    for i in sorted(chosen_layers):
        heads, heads_without = full[sites[i]].heads[0, :, -1].float(), without[sites[i]].heads[0, :, -1].float()
        chosen = vhr_heads((heads - heads_without).norm(dim=-1), heads_without.pow(2).sum(-1))
        scales[sites[i]] = 1.0 + (float(cfg.interventions.vhr.alpha) - 1.0) * chosen.float()
    return HeadScale(scales)


class _LayersFrom(Probe):
    """``probe`` on the sites of layer ``first`` and deeper only."""

    def __init__(self, probe: Probe, first: int) -> None:
        self.probe, self.first = probe, first

    def on_logits(self, call: AttentionCall, logits: torch.Tensor) -> torch.Tensor | None:
        return self.probe.on_logits(call, logits) if _layer_index(call.site) >= self.first else None


def _capture(model: Any, ids: torch.Tensor) -> dict[str, Capture.Record]:
    capture = Capture()
    with torch.no_grad(), attach(model, "*self_attn", capture):
        model(ids)
    return {site: records[0] for site, records in capture.calls.items()}


def _mentions(tokenizer: Any, response: list[int], categories: list[str]) -> dict[str, int]:
    """Each category named in the response -> the index of the response token that completes its first mention."""
    patterns = {name: re.compile(rf"\b{re.escape(name.lower())}s?\b") for name in categories}
    found: dict[str, int] = {}
    for j in range(len(response)):
        text = tokenizer.decode(response[: j + 1]).lower()
        for name, pattern in patterns.items():
            if name not in found and pattern.search(text):
                found[name] = j
    return found


def _layer_index(site: str) -> int:
    return int(site.split(".")[2])


def _episode(cfg: DictConfig, model: Any, tokenizer: Any, instruction: str, visible: dict[str, list[str]],
             categories: list[str]) -> dict[str, Any]:
    """One prompt: the answer, its mentions with T-VHD, and the FAI enrichment of the instruction's landmarks."""
    ids, observation = _prompt(tokenizer, instruction, _observation_text(visible))
    blank, _ = _prompt(tokenizer, instruction, "(no observation)")
    seen = {name for names in visible.values() for name in names}
    conditions = {}
    for name in cfg.interventions:
        if name == "vhr":
            answer = _generate(cfg, model, ids, ("*self_attn", _vhr(cfg, model, ids, blank)))
        elif name == "paint":
            paint = _Paint(observation, float(cfg.interventions.paint.alpha))
            answer = _generate(cfg, model, ids, ("*self_attn", _LayersFrom(paint, 2)))
        else:
            raise ValueError(f"llm_attention: unknown intervention {name!r}; expected vhr or paint")
        found = _mentions(tokenizer, answer.tolist(), categories)
        conditions[name] = {"answer": tokenizer.decode(answer, skip_special_tokens=True), "tokens": len(answer),
                            "mentions": len(found), "hallucinated": sum(n not in seen for n in found)}
    response = _generate(cfg, model, ids)
    if len(response) == 0:
        return {"answer": "", "mentions": {}, "conditions": conditions}
    out = torch.cat([ids, response[None]], dim=1)
    full, blank_full = _capture(model, out), _capture(model, torch.cat([blank, response[None]], dim=1))
    p, q = ids.shape[1], blank.shape[1]
    sites = sorted(full, key=_layer_index)
    vhd = torch.stack([(full[s].heads[0, :, p:] - blank_full[s].heads[0, :, q:]).float().norm(dim=-1).T
                       for s in sites])                                # (layers, response tokens, heads)
    t_vhd = vhd.topk(min(int(cfg.vhd_top_k), vhd.shape[-1]), dim=-1).values.sum(-1).sum(0)
    mentions = {name: {"t_vhd": float(t_vhd[j]), "grounded": name in seen}
                for name, j in _mentions(tokenizer, response.tolist(), categories).items()}

    layers = len(sites)
    sampled = sorted({round(x) for x in np.linspace(layers // 3, 2 * layers // 3, 5)})
    maps = torch.stack([full[sites[i]].probs[0].float() for i in sampled])        # (5, H, N, N)
    rows = slice(p, maps.shape[-1])
    spans = _span_on_rows(maps, p)
    local, glob = local_global_heads(spans)
    local_map, global_map = maps[local].mean(0), maps[glob].mean(0)
    fai_scores = fai(global_map, int(cfg.h_lo), int(cfg.h_hi))[:p]
    waad_scores = waad(local_map, int(cfg.window))[rows]
    words = [tokenizer.decode([t]).strip().lower() for t in ids[0].tolist()]
    landmark = np.array([any(w and w in name.lower().split() for name in categories) for w in words])
    in_instruction = np.zeros(p, dtype=bool)
    start = next((i for i in range(p) if "instruction" in tokenizer.decode(ids[0, : i + 1]).lower()), 0)
    in_instruction[start:] = True
    valid = ~torch.isnan(fai_scores).numpy()
    candidates = landmark & in_instruction & valid
    enrichment = math.nan
    if candidates.any() and valid.sum() >= 10:
        top = np.zeros(p, dtype=bool)
        order = np.argsort(-np.nan_to_num(fai_scores.numpy(), nan=-np.inf))
        top[order[: max(1, int(0.1 * valid.sum()))]] = True
        enrichment = float((top & candidates).sum() / top.sum()) / float(candidates.sum() / valid.sum())
    conditions["off"] = {"answer": tokenizer.decode(response, skip_special_tokens=True), "tokens": len(response),
                         "mentions": len(mentions), "hallucinated": sum(not m["grounded"] for m in mentions.values())}
    return {"answer": tokenizer.decode(response, skip_special_tokens=True), "mentions": mentions, "conditions": conditions,
            "fai_enrichment": enrichment, "mean_waad": float(waad_scores.mean()), "sampled_layers": sampled}


def _span_on_rows(maps: torch.Tensor, first_row: int) -> torch.Tensor:
    """Head span ``(layers, H)`` (:func:`~vlnkit.perception.attention.analysis.head_span`) over the response
    rows ``first_row ..`` only."""
    return head_span(maps[..., first_row:, :], first_row)


def run(cfg: DictConfig, ctx: ExperimentContext) -> ExperimentResult:
    """Prompt SmolLM2 on the first observations of ``episodes`` episodes (module docstring)."""
    import gymnasium

    import vlnkit  # noqa: F401  (registers the environments)
    from vlnkit.envs.street.panorama import SceneFeatureSource
    from vlnkit.envs.synth import default_city

    release = default_city(int(cfg.city_seed), str(cfg.city_size))
    categories = SceneFeatureSource(release / "graph" / "scene.jsonl").categories
    env = gymnasium.make("vlnkit/Touchdown-v0", data_dir=release, split=str(cfg.split), episode_kinds="all",
                         panorama="auto").unwrapped
    episodes = env.episodes[: int(cfg.episodes)]
    done: dict[str, Any] = ctx.load_state("episodes") or {}
    model = tokenizer = None
    with ctx.bar(len(episodes), desc="llm_attention", initial=len(done)) as bar:
        for episode in episodes:
            key = str(episode.episode_id)
            if key in done:
                continue
            if model is None:
                torch.manual_seed(ctx.seed)
                model, tokenizer = load_transformers_llm(cfg.model_path)
            obs, _ = env.reset(options={"episode_id": episode.episode_id})
            visible = visible_landmarks(obs["panorama"], categories, float(cfg.visible_threshold))
            done[key] = _episode(cfg, model, tokenizer, str(obs["instruction"]), visible, categories)
            ctx.save_state("episodes", done)
            bar.update(1)

    mentions = [m for e in done.values() for m in e["mentions"].values()]
    grounded = [m["t_vhd"] for m in mentions if m["grounded"]]
    hallucinated = [m["t_vhd"] for m in mentions if not m["grounded"]]
    enrichment = [e["fai_enrichment"] for e in done.values() if not math.isnan(e.get("fai_enrichment", math.nan))]
    summary = {
        "episodes": len(done), "mentions": len(mentions),
        "hallucination_rate": len(hallucinated) / len(mentions) if mentions else math.nan,
        "t_vhd_grounded": float(np.mean(grounded)) if grounded else math.nan,
        "t_vhd_hallucinated": float(np.mean(hallucinated)) if hallucinated else math.nan,
        "fai_enrichment": float(np.mean(enrichment)) if enrichment else math.nan,
        "mean_waad": float(np.mean([e["mean_waad"] for e in done.values() if "mean_waad" in e])) if done else math.nan,
    }
    table = Table("SmolLM2 on the agent's observations", ["measure", "value"],
                  [[k, f"{v:.3f}" if isinstance(v, float) else v] for k, v in summary.items()],
                  note=f"{cfg.split} episodes of the synthetic city {cfg.city_seed}; the observation names the landmarks "
                       "the simulator's labels show (privileged perception, as the LLM agent reads them); T-VHD: top "
                       f"{cfg.vhd_top_k} heads per layer, summed over layers; FAI enrichment > 1: the top decile of "
                       "FAI falls on the instruction's landmark words more often than on a random prompt token.")
    examples = Table("Answers", ["episode", "answer", "mentions (grounded?)"],
                     [[k, e["answer"], ", ".join(f"{n} ({'yes' if m['grounded'] else 'no'}, T-VHD {m['t_vhd']:.2f})"
                                                 for n, m in e["mentions"].items())]
                      for k, e in list(done.items())[:10]])
    names = ["off", *[str(n) for n in cfg.interventions]]
    per_condition = {}
    for name in names:
        runs = [e["conditions"][name] for e in done.values() if name in e.get("conditions", {})]
        mentioned = sum(r["mentions"] for r in runs)
        per_condition[name] = {
            "answers": len(runs), "mentions": mentioned,
            "hallucination_rate": sum(r["hallucinated"] for r in runs) / mentioned if mentioned else math.nan,
            "mean_tokens": float(np.mean([r["tokens"] for r in runs])) if runs else math.nan}
    interventions = Table("Landmark hallucination with VHR and PAINT on SmolLM2", ["condition", "answers", "mentions",
                          "hallucination rate", "answer tokens"],
                          [[n, c["answers"], c["mentions"], f"{c['hallucination_rate']:.3f}", f"{c['mean_tokens']:.1f}"]
                           for n, c in per_condition.items()],
                          note="A mention is hallucinated when no direction of the observation shows the category. "
                               "Longer answers mention more; compare rates, and lengths.")
    return ExperimentResult(results={"summary": summary, "conditions": per_condition, "episodes": done},
                            tables=[table, interventions, examples])
