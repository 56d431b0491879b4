"""Training the multimodal policy by imitation with DAgger (``vlnkit train policy``).

1. **Teacher**: ``teacher=gold`` follows the episode's reference route, loops and returns included
   (``info["gold_action"]``; off the route it falls back to the shortest path to the goal), so its labels
   agree with the instruction; ``teacher=shortest`` is the shortest-path oracle (``info["oracle_action"]``),
   which cuts across loops and returns the instruction describes. Labels are privileged information, read
   here and nowhere else.
2. **Demonstrations** come from the training splits of one or more releases (``cities``: several seeds of
   the built-in synthetic city). Round 0 rolls out the teacher; with probability ``noise`` it executes a
   random move instead (never STOP, which would end the demonstration) so the data shows how to recover.
   Each later DAgger round rolls out the policy trained so far, executing the teacher's action with
   probability ``dagger.beta ** round`` and the policy's otherwise, labels every visited state with the
   teacher's action, and adds the episodes to the data. The policy's inputs are recorded as the agent
   sees them: instruction words, the parsed sub-goals, panorama, link bins, and the
   entries its Mem4Nav memory returns for the step (retrieved with the view's own embedding as the query,
   then the view is written), and where it came from (``origin``: release and episode index). Demonstrations
   are cached beside the checkpoint, round by round.
3. **Training**: ``train.epochs`` epochs per round over all the data so far: teacher forcing over whole
   episodes (the hidden state runs through the episode), cross entropy on the teacher's actions (weighted
   by inverse action frequency to the power ``class_balance``), plus ``aux_weight`` times
   ``1 - cos(query, view embedding)`` so the memory query the agent retrieves with stays in the embedding
   space retrieval was recorded with. The memory tokens of a whole episode are dropped with probability
   ``memory_dropout``, so one policy runs with and without them. AdamW; each round warms up and decays
   its learning rate (cosine).
4. **Curves**: after every round the policy runs greedily on ``dagger.eval_episodes`` training episodes
   and dev episodes of the first release, once per ``dagger.eval_memory`` variant; loss, decision
   accuracy and TC per round go into the checkpoint, ``<out>.curves.json`` and a plot ``<out>.curves.png``.
5. **Checkpoints** are written atomically after every ``checkpoint_every`` epochs and after each round's
   evaluation (model, optimiser, schedule, round, epoch, random state, vocabulary, lexicon, configs);
   with ``resume`` a run continues from its checkpoint and a finished run returns at once.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from vlnkit.agents.memory_support import ViewCodec, build_memory, feature_categories
from vlnkit.agents.modular.language import LandmarkLexicon, release_examples
from vlnkit.agents.policy.features import (
    EXTRA_MEMORY_FEATURES,
    Vocabulary,
    link_bins,
    memory_features,
    strided_history,
    subgoal_rows,
)
from vlnkit.agents.policy.model import FlamePolicy, PolicyConfig
from vlnkit.config import config_hash
from vlnkit.envs.street.navigator import StreetAction
from vlnkit.memory.checkpoint import load_torch, save_text, save_torch

DEMOS_SUFFIX = ".demos.pt"
FORWARD = int(StreetAction.FORWARD)
TEACHERS = {"gold": "gold_action", "shortest": "oracle_action"}
"""Teacher name -> the ``info`` key holding its action."""


@dataclass
class TrainSettings:
    """Optimisation settings of :func:`train_policy` (``epochs`` per DAgger round)."""

    epochs: int = 30
    batch_size: int = 16
    lr: float = 1.0e-3
    weight_decay: float = 0.01
    warmup_epochs: float = 1.0
    memory_dropout: float = 0.25
    aux_weight: float = 0.1
    class_balance: float = 0.5
    grad_clip: float = 1.0
    checkpoint_every: int = 1
    threads: int | None = 1


@dataclass
class DaggerSettings:
    """DAgger rounds of :func:`train_policy`: round 0 is the teacher's, each later one the policy's."""

    rounds: int = 1
    beta: float = 0.5
    episodes_per_round: int | None = None
    eval_episodes: int = 100
    eval_memory: list[str] = field(default_factory=lambda: ["none", "full"])


@dataclass
class Source:
    """One release the policy trains on: its street env and the episodes used from its training split."""

    env: Any
    episodes: Sequence[Any]


def _memory(settings: Mapping[str, Any], codec: ViewCodec, variant: str | None = None) -> Any:
    return build_memory(str(variant or settings.get("variant", "full")), codec.dim,
                        settings.get("overrides") or {}, int(settings.get("seed", 0)),
                        descriptor_dim=codec.descriptor_dim)


def collect_demonstrations(
    env: Any,
    episodes: Sequence[Any],
    vocabulary: Vocabulary,
    lexicon: LandmarkLexicon,
    codec: ViewCodec,
    memory_settings: Mapping[str, Any],
    memory_tokens: int,
    max_words: int,
    max_goals: int,
    teacher: str = "gold",
    noise: float = 0.1,
    seed: int | Sequence[int] = 0,
    actor: Any = None,
    beta: float = 1.0,
    progress: bool = True,
) -> list[dict[str, np.ndarray]]:
    """Rollouts on ``episodes`` of a street ``env`` as policy inputs and the ``teacher``'s labels (see the
    module docstring); ``memory_settings`` has ``variant``, ``overrides``, ``seed``. With an ``actor`` (a
    :class:`~vlnkit.agents.policy.agent.PolicyAgent`) each step executes the teacher's action with
    probability ``beta`` and the actor's otherwise; without one, the teacher's or (``noise``) a random move."""
    if teacher not in TEACHERS:
        raise ValueError(f"unknown teacher {teacher!r}; expected one of {sorted(TEACHERS)}")
    key = TEACHERS[teacher]
    rng = np.random.default_rng(seed)
    memory = _memory(memory_settings, codec)
    moves = [a for a in range(int(env.action_space.n)) if a != 0]
    demos = []
    for ep in tqdm(episodes, desc="demonstrations", unit="ep", disable=not progress):
        obs, info = env.reset(options={"episode_id": ep.episode_id})
        memory.reset()
        if actor is not None:
            actor.reset(obs, None, 0)
        fields = ("panorama", "links", "label", "taken", "embedding", "memory")
        rows: dict[str, list[np.ndarray]] = {k: [] for k in fields}
        done, step = False, 0
        while not done:
            heading = float(obs["heading"][0])
            position = np.array([*obs["position"][:2], 0.0])
            embedding = codec.embed(obs["panorama"], heading)
            found = memory.retrieve(embedding, position, k=memory_tokens) if memory.writes else None
            rows["memory"].append(
                memory_features(found, position, heading, step, memory_tokens, codec.dim) if found is not None
                else np.zeros((memory_tokens, codec.dim + EXTRA_MEMORY_FEATURES), dtype=np.float32)
            )
            memory.write(embedding, position, step, descriptor=codec.descriptor(obs["panorama"], heading))
            label = int(info[key])
            if actor is not None:
                chosen = actor.act(obs)
                taken = label if rng.random() < beta else chosen
            else:
                taken = int(rng.choice(moves)) if rng.random() < noise else label
            rows["panorama"].append(np.asarray(obs["panorama"], dtype=np.float32))
            rows["links"].append(link_bins(obs["links"], heading, codec.sectors))
            rows["label"].append(np.int64(label))
            rows["taken"].append(np.int64(taken))
            rows["embedding"].append(embedding)
            obs, _, terminated, truncated, info = env.step(taken)
            done = terminated or truncated
            step += 1
        demo = {k: np.stack(v) for k, v in rows.items()}
        demo["words"] = vocabulary.encode(ep.instruction, max_words)
        demo["subgoals"] = subgoal_rows(ep.instruction, lexicon, max_goals)
        demos.append(demo)
    return demos


def task_completion(env: Any, episodes: Sequence[Any], agent: Any) -> float:
    """TC in % of a greedy ``agent`` on ``episodes`` of a street ``env`` (STOP at or next to the goal)."""
    if not episodes:
        return float("nan")
    reached = 0.0
    for ep in episodes:
        obs, _ = env.reset(options={"episode_id": ep.episode_id})
        agent.reset(obs, None, 0)
        done, reward = False, 0.0
        while not done:
            obs, reward, terminated, truncated, _ = env.step(agent.act(obs))
            done = terminated or truncated
        reached += float(reward)
    return 100.0 * reached / len(episodes)


def _batch(demos: Sequence[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
    """Pad a list of episodes into tensors (``valid`` marks real steps)."""
    b = len(demos)
    t = max(len(d["label"]) for d in demos)
    length = max(len(d["words"]) for d in demos)
    s, c = demos[0]["panorama"].shape[1:]
    k, f = demos[0]["memory"].shape[1:]
    out = {
        "words": torch.zeros(b, length, dtype=torch.long),
        "subgoals": torch.from_numpy(np.stack([d["subgoals"] for d in demos])),
        "panorama": torch.zeros(b, t, s, c),
        "links": torch.zeros(b, t, s),
        "label": torch.zeros(b, t, dtype=torch.long),
        "embedding": torch.zeros(b, t, demos[0]["embedding"].shape[1]),
        "memory": torch.zeros(b, t, k, f),
        "valid": torch.zeros(b, t, dtype=torch.bool),
    }
    for i, d in enumerate(demos):
        n = len(d["label"])
        out["words"][i, : len(d["words"])] = torch.from_numpy(d["words"])
        out["panorama"][i, :n] = torch.from_numpy(d["panorama"])
        out["links"][i, :n] = torch.from_numpy(d["links"])
        out["label"][i, :n] = torch.from_numpy(d["label"])
        out["embedding"][i, :n] = torch.from_numpy(d["embedding"])
        out["memory"][i, :n] = torch.from_numpy(d["memory"])
        out["valid"][i, :n] = True
    return out


def _batches(demos: Sequence[dict[str, np.ndarray]], size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Episode indices in batches of similar length (little padding to step through), in random order."""
    jitter = rng.random(len(demos))
    order = np.lexsort((jitter, [len(d["label"]) for d in demos]))
    batches = [order[i : i + size] for i in range(0, len(order), size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def class_weights(demos: Sequence[dict[str, np.ndarray]], num_actions: int, exponent: float) -> torch.Tensor:
    """Per-action loss weights ``frequency ** -exponent``, scaled to average 1 over the demonstrations' steps
    (the oracle mostly goes FORWARD and stops once per episode: unweighted, a policy never learns to stop)."""
    counts = np.bincount(np.concatenate([d["label"] for d in demos]), minlength=num_actions).astype(np.float64)
    freq = np.maximum(counts, 1.0) / counts.sum()
    weights = freq**-exponent
    weights /= float((weights * freq).sum())
    return torch.tensor(weights, dtype=torch.float32)


def episode_losses(model: FlamePolicy, batch: dict[str, torch.Tensor], use_memory: torch.Tensor,
                   weights: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Teacher-forced imitation loss (weighted per action by ``weights``), auxiliary query loss, accuracy and
    decision accuracy (on the steps whose label is a turn or STOP, where FORWARD-majority accuracy says
    nothing) over a padded batch; ``use_memory`` ``(B,)`` says which episodes see their memory tokens."""
    c = model.config
    instruction = model.encode_instruction(batch["words"])
    subgoals = model.encode_subgoals(batch["subgoals"])
    b, t = batch["label"].shape
    hidden = torch.zeros(b, c.d_model)
    summaries: list[torch.Tensor] = []
    nll = aux = correct = turns = torch.zeros(())
    count = batch["valid"].sum().clamp(min=1)
    decisions = (batch["valid"] & (batch["label"] != FORWARD)).sum().clamp(min=1)
    for step in range(t):
        valid = batch["valid"][:, step]
        if not valid.any():
            break
        visual = model.visual_tokens(batch["panorama"][:, step], batch["links"][:, step])
        query = model.memory_query(hidden, visual)
        chosen = strided_history(step, c.recent, c.stride)
        history = torch.stack([summaries[i] for i in chosen], dim=1) if chosen else torch.zeros(b, 0, c.d_model)
        ages = torch.tensor([step - i for i in chosen], dtype=torch.long)
        history_pad = torch.zeros(b, len(chosen), dtype=torch.bool)
        memory = batch["memory"][:, step] * use_memory[:, None, None]
        goals = model.subgoal_tokens(subgoals, batch["panorama"][:, step], batch["links"][:, step])
        logits, hidden = model.step(instruction, goals, visual, history, ages, history_pad, memory, query, hidden)
        labels = batch["label"][:, step]
        nll = nll + (F.cross_entropy(logits, labels, weight=weights, reduction="none") * valid).sum()
        aux = aux + ((1.0 - F.cosine_similarity(query, batch["embedding"][:, step], dim=-1)) * valid).sum()
        right = (logits.argmax(-1) == labels) & valid
        correct = correct + right.sum()
        turns = turns + (right & (labels != FORWARD)).sum()
        summaries.append(model.summary(batch["panorama"][:, step], batch["links"][:, step]))
    return {"nll": nll / count, "aux": aux / count, "accuracy": correct.float() / count,
            "decision_accuracy": turns.float() / decisions}


def _schedule(warmup: int, total: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def load_policy(path: str | Path) -> tuple[FlamePolicy, Vocabulary, dict[str, Any]]:
    """The trained policy (eval mode), its vocabulary and the checkpoint's metadata from ``path`` (``lexicon``
    in it is the :class:`LandmarkLexicon` its sub-goals were parsed with)."""
    checkpoint = load_torch(path)
    model = FlamePolicy(PolicyConfig(**checkpoint["model_config"]))
    model.load_state_dict(checkpoint["model"])
    model.eval()
    meta = {k: checkpoint[k] for k in ("categories", "heading_weight", "round", "epoch", "history", "curve",
                                       "collection")}
    meta["lexicon"] = LandmarkLexicon(checkpoint["categories"], [tuple(e) for e in checkpoint["lexicon_examples"]])
    return model, Vocabulary(checkpoint["vocabulary"]), meta


def _releases(cfg: DictConfig) -> list[Path]:
    """The training releases: ``data_dir``, or the built-in synthetic city of every seed in ``cities``."""
    if cfg.data_dir is not None:
        return [Path(str(cfg.data_dir)).expanduser()]
    from vlnkit.envs.synth import default_city

    seeds = list(cfg.cities) if cfg.get("cities") else [int(cfg.city_seed)]
    return [default_city(int(s), str(cfg.city_size)) for s in seeds]


def _make_env(release: Path, split: str, cfg: DictConfig) -> Any:
    import gymnasium

    import vlnkit  # noqa: F401  (registers the environments)

    return gymnasium.make(
        "vlnkit/Touchdown-v0", data_dir=release, split=split, episode_kinds="all", semantics=str(cfg.semantics),
        max_steps=int(cfg.max_steps), steps_per_node=cfg.steps_per_node, panorama="auto",
    ).unwrapped


def _subset(episodes: Sequence[Any], count: int | None, rng: np.random.Generator | None = None) -> list[Any]:
    """The first ``count`` episodes (all when ``None``), or ``count`` drawn without replacement by ``rng``."""
    episodes = list(episodes)
    if count is None or count >= len(episodes):
        return episodes
    if rng is None:
        return episodes[:count]
    return [episodes[i] for i in sorted(rng.choice(len(episodes), size=count, replace=False))]


def plot_curves(curve: Sequence[Mapping[str, Any]], history: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Training curves as a PNG: loss and accuracy per epoch, and TC per round and memory variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (loss_ax, tc_ax) = plt.subplots(1, 2, figsize=(10, 3.6))
    epochs = np.arange(1, len(history) + 1)
    loss_ax.plot(epochs, [h["nll"] for h in history], label="imitation loss")
    loss_ax.plot(epochs, [h["accuracy"] for h in history], label="train accuracy (all steps)")
    loss_ax.plot(epochs, [h["decision_accuracy"] for h in history], label="train accuracy (turns and stops)")
    loss_ax.set_xlabel("epoch (all rounds)")
    loss_ax.legend()
    rounds = [c["round"] for c in curve]
    for key in sorted({k for c in curve for k in c if k.endswith("_tc")}):
        tc_ax.plot(rounds, [c.get(key, float("nan")) for c in curve], marker="o", label=key[:-3].replace("_", " "))
    tc_ax.set_xlabel("DAgger round")
    tc_ax.set_ylabel("TC (%)")
    tc_ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(path.name + ".tmp.png")
    fig.savefig(temp, dpi=100)
    plt.close(fig)
    temp.replace(path)
    return path


def train_policy(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """Collect demonstrations, train a :class:`FlamePolicy` and run its DAgger rounds as ``cfg`` says
    (``configs/train_policy.yaml``); returns the checkpoint path, the last epoch's loss and accuracy and the
    per-round curve."""
    from vlnkit.agents.policy.agent import PolicyAgent

    cfg = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(dict(cfg))
    settings = TrainSettings(**OmegaConf.to_container(cfg.train, resolve=True))
    dagger = DaggerSettings(**OmegaConf.to_container(cfg.dagger, resolve=True))
    if settings.threads:
        torch.set_num_threads(int(settings.threads))
    out = Path(str(cfg.out)).expanduser()
    seed = int(cfg.seed)
    releases = _releases(cfg)
    categories = feature_categories(releases[0])
    for release in releases[1:]:
        if feature_categories(release) != categories:
            raise ValueError(f"{release / 'graph' / 'scene.jsonl'}: its categories differ from those of {releases[0]}")
    sources = [Source(env, _subset(env.episodes, cfg.episodes))
               for env in (_make_env(release, str(cfg.split), cfg) for release in releases)]
    dev_env = _make_env(releases[0], str(cfg.eval_split), cfg)
    codec = ViewCodec(int(cfg.sectors), len(categories), float(cfg.heading_weight))
    model_settings = OmegaConf.to_container(cfg.model, resolve=True)
    memory_settings = {
        "variant": str(cfg.memory_variant),
        "overrides": OmegaConf.to_container(cfg.memory_overrides, resolve=True),
        "seed": int(cfg.memory_seed),
    }
    collection = {
        "releases": [str(r.resolve()) for r in releases], "split": str(cfg.split),
        "episodes": [[ep.episode_id for ep in s.episodes] for s in sources],
        "teacher": str(cfg.teacher), "noise": float(cfg.noise), "seed": seed, "memory": memory_settings,
        "memory_tokens": int(model_settings["memory_tokens"]), "max_words": int(model_settings["max_words"]),
        "subgoals": int(model_settings["subgoals"]), "semantics": str(cfg.semantics),
        "max_steps": int(cfg.max_steps), "steps_per_node": cfg.steps_per_node,
        "heading_weight": float(cfg.heading_weight), "dagger": {"beta": dagger.beta,
                                                                "episodes_per_round": dagger.episodes_per_round},
    }
    vocabulary = Vocabulary.build(ep.instruction for s in sources for ep in s.episodes)
    examples = [e for release in releases for e in release_examples(release, str(cfg.split))]
    lexicon = LandmarkLexicon(categories, examples)
    model_config = PolicyConfig(vocab_size=len(vocabulary), categories=len(categories), memory_dim=codec.dim,
                                sectors=codec.sectors, num_actions=int(sources[0].env.action_space.n),
                                **model_settings)
    torch.manual_seed(seed)
    model = FlamePolicy(model_config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    key = config_hash(collection)
    cache = out.with_name(out.name + DEMOS_SUFFIX)
    stored = load_torch(cache) if cache.is_file() else None
    demo_rounds: list[list[dict[str, np.ndarray]]] = []
    if stored is not None and stored.get("collection_hash") == key:
        demo_rounds = [[{k: v.numpy() for k, v in d.items()} for d in r] for r in stored["rounds"]]
    rng = np.random.default_rng(seed)
    round_, epoch, history, curve, schedule_state, optimizer_state = 0, 0, [], [], None, None
    if bool(cfg.resume) and out.is_file():
        state = load_torch(out)
        if state.get("collection_hash") != key:
            raise ValueError(f"{out} was trained on other demonstrations; use another out= or resume=false")
        model.load_state_dict(state["model"])
        round_, epoch = int(state["round"]), int(state["epoch"])
        history, curve, schedule_state = list(state["history"]), list(state["curve"]), state["schedule"]
        optimizer_state = state["optimizer"]
        rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"])
    schedule = None

    def save() -> None:
        save_torch({
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict() if schedule is not None else None,
            "round": round_, "epoch": epoch, "history": history, "curve": curve, "rng": rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(), "model_config": asdict(model_config),
            "train_settings": asdict(settings), "dagger": asdict(dagger), "vocabulary": vocabulary.tokens,
            "lexicon_examples": [list(e) for e in examples], "categories": categories,
            "heading_weight": codec.heading_weight, "collection": collection, "collection_hash": key,
        }, out)

    def agent(variant: str) -> PolicyAgent:
        memory = _memory(memory_settings, codec, variant)
        return PolicyAgent(model, vocabulary, codec, memory, model_config.num_actions, lexicon)

    def collect(r: int) -> list[dict[str, np.ndarray]]:
        round_rng = np.random.default_rng([seed, r])
        actor = None if r == 0 else agent(str(cfg.memory_variant))
        demos = []
        for i, source in enumerate(sources):
            episodes = source.episodes if r == 0 else _subset(source.episodes, dagger.episodes_per_round, round_rng)
            made = collect_demonstrations(
                source.env, episodes, vocabulary, lexicon, codec, memory_settings, model_config.memory_tokens,
                model_config.max_words, model_config.subgoals, str(cfg.teacher), float(cfg.noise),
                seed=[seed, r, i], actor=actor, beta=dagger.beta**r, progress=bool(cfg.progress),
            )
            index = {ep.episode_id: j for j, ep in enumerate(source.episodes)}
            for ep, demo in zip(episodes, made):
                demo["origin"] = np.array([i, index[ep.episode_id]], dtype=np.int64)
            demos += made
        model.train()
        return demos

    while round_ < dagger.rounds:
        if len(demo_rounds) <= round_:
            demo_rounds.append(collect(round_))
            save_torch({"collection_hash": key, "rounds": [[{k: torch.from_numpy(v) for k, v in d.items()} for d in r]
                                                           for r in demo_rounds]}, cache)
        demos = [d for r in demo_rounds[: round_ + 1] for d in r]
        per_epoch = math.ceil(len(demos) / settings.batch_size)
        if optimizer_state is not None:
            optimizer.load_state_dict(optimizer_state)
            optimizer_state = None
        for group in optimizer.param_groups:   # every round warms up from the configured rate
            group["lr"] = group["initial_lr"] = settings.lr
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, _schedule(int(settings.warmup_epochs * per_epoch), settings.epochs * per_epoch))
        if schedule_state is not None:   # resumed within a round: its schedule and current rate
            schedule.load_state_dict(schedule_state)
            for group, lr in zip(optimizer.param_groups, schedule.get_last_lr()):
                group["lr"] = lr
            schedule_state = None
        weights = class_weights(demos, model_config.num_actions, settings.class_balance)
        with tqdm(total=settings.epochs * per_epoch, initial=epoch * per_epoch, desc=f"train policy, round {round_}",
                  unit="batch", disable=not bool(cfg.progress)) as bar:
            while epoch < settings.epochs:
                model.train()
                totals = {"nll": 0.0, "aux": 0.0, "accuracy": 0.0, "decision_accuracy": 0.0}
                for indices in _batches(demos, settings.batch_size, rng):
                    chosen = [demos[i] for i in indices]
                    batch = _batch(chosen)
                    use_memory = torch.from_numpy(rng.random(len(chosen)) >= settings.memory_dropout).float()
                    losses = episode_losses(model, batch, use_memory, weights)
                    loss = losses["nll"] + settings.aux_weight * losses["aux"]
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
                    optimizer.step()
                    schedule.step()
                    for name in totals:
                        totals[name] += float(losses[name].detach()) * len(chosen) / len(demos)
                    bar.set_postfix(loss=f"{float(losses['nll'].detach()):.3f}",
                                    acc=f"{float(losses['accuracy']):.2f}", refresh=False)
                    bar.update()
                epoch += 1
                history.append({**totals, "round": round_})
                if epoch % settings.checkpoint_every == 0 or epoch == settings.epochs:
                    save()
        model.eval()
        point: dict[str, Any] = {"round": round_, "episodes": len(demos), "steps": int(sum(len(d["label"]) for d in demos)),
                                 **{k: history[-1][k] for k in ("nll", "accuracy", "decision_accuracy")}}
        for variant in dagger.eval_memory:
            point[f"train_{variant}_tc"] = task_completion(
                sources[0].env, _subset(sources[0].episodes, dagger.eval_episodes), agent(variant))
            point[f"dev_{variant}_tc"] = task_completion(
                dev_env, _subset(dev_env.episodes, dagger.eval_episodes), agent(variant))
        curve.append(point)
        round_, epoch, schedule = round_ + 1, 0, None
        save()
        save_text(json.dumps(curve, indent=1), out.with_name(out.name + ".curves.json"))
        plot_curves(curve, history, out.with_name(out.name + ".curves.png"))
    if not out.is_file():
        save()
    last = history[-1] if history else {}
    return {"checkpoint": str(out), "episodes": sum(len(r) for r in demo_rounds), "rounds": round_,
            "epochs": len(history), **{k: v for k, v in last.items() if k != "round"},
            "first_epoch_nll": history[0]["nll"] if history else None, "curve": curve}
