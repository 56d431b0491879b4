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
- **WAAD/FAI** (Preplan-and-Anchor): over 5 evenly spaced layers of the middle third, the 30% of (layer, head)
  with the shortest and the longest span on the response rows form the local and global sets; FAI (``h_lo``,
  ``h_hi``) of every prompt token; reported: how much more often the top decile of FAI lands on the
  instruction's landmark words than a random prompt token does (the enrichment), and the mean WAAD.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from vlnkit.agents.llm.prompt import visible_landmarks
from vlnkit.agents.llm.transformers_llm import load_transformers_llm
from vlnkit.eval.experiments.runner import ExperimentContext, ExperimentResult, Table
from vlnkit.perception.attention import Capture, attach
from vlnkit.perception.attention.analysis import fai, head_span, local_global_heads, waad

QUESTION = "In one sentence, name the landmarks you see and where they are."


def _observation_text(visible: dict[str, list[str]]) -> str:
    parts = [f"{direction}: {', '.join(names)}" for direction, names in visible.items() if names]
    return "; ".join(parts) if parts else "no landmarks"


def _prompt(tokenizer: Any, instruction: str, observation: str) -> torch.Tensor:
    messages = [{"role": "user", "content": f"Instruction: {instruction}\nWhat you see: {observation}\n{QUESTION}"}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    return ids["input_ids"]


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
    ids = _prompt(tokenizer, instruction, _observation_text(visible))
    blank = _prompt(tokenizer, instruction, "(no observation)")
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=int(cfg.max_new_tokens),
                             do_sample=False)
    response = out[0, ids.shape[1]:]
    if len(response) == 0:
        return {"answer": "", "mentions": {}}
    full, blank_full = _capture(model, out), _capture(model, torch.cat([blank, response[None]], dim=1))
    p, q = ids.shape[1], blank.shape[1]
    sites = sorted(full, key=_layer_index)
    vhd = torch.stack([(full[s].heads[0, :, p:] - blank_full[s].heads[0, :, q:]).float().norm(dim=-1).T
                       for s in sites])                                # (layers, response tokens, heads)
    t_vhd = vhd.topk(min(int(cfg.vhd_top_k), vhd.shape[-1]), dim=-1).values.sum(-1).sum(0)
    seen = {name for names in visible.values() for name in names}
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
    return {"answer": tokenizer.decode(response, skip_special_tokens=True), "mentions": mentions,
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
    return ExperimentResult(results={"summary": summary, "episodes": done}, tables=[table, examples])
