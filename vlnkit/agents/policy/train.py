"""Training the multimodal policy by imitation of the shortest-path oracle (``vlnkit train policy``).

1. **Demonstrations**: the oracle is rolled out on the training split of a street release. At each step
   the label is ``info["oracle_action"]`` (privileged information, read here and nowhere else); with
   probability ``noise`` a random action is executed instead so that the data shows how to recover. The
   policy's inputs are recorded as the agent will see them: instruction words, panorama, link bins,
   previous action, and the entries its Mem4Nav memory returns for the step (retrieved with the view's
   own embedding as the query, then the view is written), so memory tokens are trained on what retrieval
   really returns. Demonstrations are cached beside the checkpoint.
2. **Training**: teacher forcing over whole episodes (the hidden state runs through the episode), cross
   entropy on the oracle's actions (weighted by inverse action frequency to the power ``class_balance``),
   plus ``aux_weight`` times ``1 - cos(query, view embedding)`` so the
   memory query the agent retrieves with stays in the embedding space retrieval was recorded with. The
   memory tokens of a whole episode are dropped with probability ``memory_dropout``, so one policy runs
   with and without them. AdamW with linear warm-up and cosine decay.
3. **Checkpoints** are written atomically after every ``checkpoint_every`` epochs and at the end (model,
   optimiser, schedule, epoch, random state, vocabulary, configs); with ``resume`` a run continues from
   its checkpoint and a finished run returns at once.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from vlnkit.agents.memory_support import ViewCodec, build_memory, feature_categories
from vlnkit.agents.policy.features import Vocabulary, link_bins, memory_features, strided_history
from vlnkit.agents.policy.model import FlamePolicy, PolicyConfig
from vlnkit.config import config_hash
from vlnkit.memory.checkpoint import load_torch, save_torch

DEMOS_SUFFIX = ".demos.pt"


@dataclass
class TrainSettings:
    """Optimisation settings of :func:`train_policy`."""

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


def collect_demonstrations(
    env: Any,
    episodes: Sequence[Any],
    vocabulary: Vocabulary,
    codec: ViewCodec,
    memory_settings: Mapping[str, Any],
    memory_tokens: int,
    max_words: int,
    noise: float = 0.1,
    seed: int = 0,
    progress: bool = True,
) -> list[dict[str, np.ndarray]]:
    """Oracle rollouts on ``episodes`` of a street ``env`` as policy inputs and labels (see the module
    docstring); ``memory_settings`` has ``variant``, ``overrides``, ``seed``."""
    rng = np.random.default_rng(seed)
    memory = build_memory(str(memory_settings.get("variant", "full")), codec.dim,
                          memory_settings.get("overrides") or {}, int(memory_settings.get("seed", 0)),
                          descriptor_dim=codec.descriptor_dim)
    num_actions = int(env.action_space.n)
    demos = []
    for ep in tqdm(episodes, desc="demonstrations", unit="ep", disable=not progress):
        obs, info = env.reset(seed=seed, options={"episode_id": ep.episode_id})
        memory.reset()
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
                else np.zeros((memory_tokens, codec.dim + 5), dtype=np.float32)
            )
            memory.write(embedding, position, step, descriptor=codec.descriptor(obs["panorama"], heading))
            label = int(info["oracle_action"])
            taken = int(rng.integers(num_actions)) if rng.random() < noise else label
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
        demos.append(demo)
    return demos


def _batch(demos: Sequence[dict[str, np.ndarray]], no_action: int) -> dict[str, torch.Tensor]:
    """Pad a list of episodes into tensors (``valid`` marks real steps)."""
    b = len(demos)
    t = max(len(d["label"]) for d in demos)
    length = max(len(d["words"]) for d in demos)
    s, c = demos[0]["panorama"].shape[1:]
    k, f = demos[0]["memory"].shape[1:]
    out = {
        "words": torch.zeros(b, length, dtype=torch.long),
        "panorama": torch.zeros(b, t, s, c),
        "links": torch.zeros(b, t, s),
        "label": torch.zeros(b, t, dtype=torch.long),
        "previous": torch.full((b, t), no_action, dtype=torch.long),
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
        out["previous"][i, 1:n] = torch.from_numpy(d["taken"][:-1])
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
    """Teacher-forced imitation loss (weighted per action by ``weights``), auxiliary query loss and accuracy
    over a padded batch; ``use_memory`` ``(B,)`` says which episodes see their memory tokens."""
    c = model.config
    instruction = model.encode_instruction(batch["words"])
    b, t = batch["label"].shape
    hidden = torch.zeros(b, c.d_model)
    summaries: list[torch.Tensor] = []
    nll = aux = correct = torch.zeros(())
    count = batch["valid"].sum().clamp(min=1)
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
        previous = batch["previous"][:, step]
        logits, hidden = model.step(instruction, visual, history, ages, history_pad, memory, query, hidden, previous)
        labels = batch["label"][:, step]
        nll = nll + (F.cross_entropy(logits, labels, weight=weights, reduction="none") * valid).sum()
        aux = aux + ((1.0 - F.cosine_similarity(query, batch["embedding"][:, step], dim=-1)) * valid).sum()
        correct = correct + ((logits.argmax(-1) == labels) & valid).sum()
        summaries.append(model.summary(batch["panorama"][:, step], batch["links"][:, step], previous))
    return {"nll": nll / count, "aux": aux / count, "accuracy": correct.float() / count}


def _schedule(warmup: int, total: int) -> Any:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def load_policy(path: str | Path) -> tuple[FlamePolicy, Vocabulary, dict[str, Any]]:
    """The trained policy (eval mode), its vocabulary and the checkpoint's metadata from ``path``."""
    checkpoint = load_torch(path)
    model = FlamePolicy(PolicyConfig(**checkpoint["model_config"]))
    model.load_state_dict(checkpoint["model"])
    model.eval()
    meta = {k: checkpoint[k] for k in ("categories", "heading_weight", "epoch", "history", "collection")}
    return model, Vocabulary(checkpoint["vocabulary"]), meta


def train_policy(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """Collect demonstrations and train a :class:`FlamePolicy` as ``cfg`` says (``configs/train_policy.yaml``);
    returns the checkpoint path and the last epoch's loss and accuracy."""
    import gymnasium

    import vlnkit  # noqa: F401  (registers the environments)

    cfg = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(dict(cfg))
    settings = TrainSettings(**OmegaConf.to_container(cfg.train, resolve=True))
    if settings.threads:
        torch.set_num_threads(int(settings.threads))
    out = Path(str(cfg.out)).expanduser()
    seed = int(cfg.seed)
    if cfg.data_dir is not None:
        release = Path(str(cfg.data_dir)).expanduser()
    else:
        from vlnkit.envs.synth import default_city

        release = default_city(int(cfg.city_seed), str(cfg.city_size))
    env = gymnasium.make(
        "vlnkit/Touchdown-v0", data_dir=release, split=str(cfg.split), episode_kinds="all",
        semantics=str(cfg.semantics), max_steps=int(cfg.max_steps), panorama="auto",
    ).unwrapped
    episodes = env.episodes if cfg.episodes is None else env.episodes[: int(cfg.episodes)]
    categories = feature_categories(release)
    codec = ViewCodec(int(cfg.sectors), len(categories), float(cfg.heading_weight))
    model_settings = OmegaConf.to_container(cfg.model, resolve=True)
    memory_settings = {
        "variant": str(cfg.memory_variant),
        "overrides": OmegaConf.to_container(cfg.memory_overrides, resolve=True),
        "seed": int(cfg.memory_seed),
    }
    collection = {
        "release": str(release.resolve()), "split": str(cfg.split), "episodes": [ep.episode_id for ep in episodes],
        "noise": float(cfg.noise), "seed": seed, "memory": memory_settings,
        "memory_tokens": int(model_settings["memory_tokens"]),
        "max_words": int(model_settings["max_words"]), "semantics": str(cfg.semantics), "max_steps": int(cfg.max_steps),
        "heading_weight": float(cfg.heading_weight),
    }
    demos, vocabulary = _demonstrations(out, collection, env, episodes, codec, bool(cfg.progress))
    model_config = PolicyConfig(vocab_size=len(vocabulary), categories=len(categories), memory_dim=codec.dim,
                                sectors=codec.sectors, num_actions=int(env.action_space.n), **model_settings)
    torch.manual_seed(seed)
    model = FlamePolicy(model_config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    per_epoch = math.ceil(len(demos) / settings.batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _schedule(int(settings.warmup_epochs * per_epoch), settings.epochs * per_epoch)
    )
    weights = class_weights(demos, model_config.num_actions, settings.class_balance)
    rng = np.random.default_rng(seed)
    epoch, history = 0, []
    if bool(cfg.resume) and out.is_file():
        state = load_torch(out)
        if state.get("collection_hash") != config_hash(collection):
            raise ValueError(f"{out} was trained on other demonstrations; use another out= or resume=false")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        epoch, history = int(state["epoch"]), list(state["history"])
        rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"])

    def save() -> None:
        save_torch({
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
            "epoch": epoch, "history": history, "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
            "model_config": asdict(model_config), "train_settings": asdict(settings), "vocabulary": vocabulary.tokens,
            "categories": categories, "heading_weight": codec.heading_weight, "collection": collection,
            "collection_hash": config_hash(collection),
        }, out)

    with tqdm(total=settings.epochs * per_epoch, initial=epoch * per_epoch, desc="train policy", unit="batch",
              disable=not bool(cfg.progress)) as bar:
        while epoch < settings.epochs:
            model.train()
            totals = {"nll": 0.0, "aux": 0.0, "accuracy": 0.0}
            for indices in _batches(demos, settings.batch_size, rng):
                chosen = [demos[i] for i in indices]
                batch = _batch(chosen, model.no_action)
                use_memory = torch.from_numpy(rng.random(len(chosen)) >= settings.memory_dropout).float()
                losses = episode_losses(model, batch, use_memory, weights)
                loss = losses["nll"] + settings.aux_weight * losses["aux"]
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
                optimizer.step()
                schedule.step()
                for key in totals:
                    totals[key] += float(losses[key].detach()) * len(chosen) / len(demos)
                bar.set_postfix(loss=f"{float(losses['nll'].detach()):.3f}", acc=f"{float(losses['accuracy']):.2f}",
                                refresh=False)
                bar.update()
            epoch += 1
            history.append(totals)
            if epoch % settings.checkpoint_every == 0 or epoch == settings.epochs:
                save()
    if not out.is_file():
        save()
    last = history[-1] if history else {}
    return {"checkpoint": str(out), "episodes": len(demos), "epochs": epoch, **last,
            "first_epoch_nll": history[0]["nll"] if history else None}


def _demonstrations(out: Path, collection: dict[str, Any], env: Any, episodes: Sequence[Any], codec: ViewCodec,
                    progress: bool) -> tuple[list[dict[str, np.ndarray]], Vocabulary]:
    """The demonstrations and vocabulary of ``collection``: from the cache beside ``out`` when it matches,
    else collected and cached (atomically)."""
    cache = out.with_name(out.name + DEMOS_SUFFIX)
    key = config_hash(collection)
    if cache.is_file():
        stored = load_torch(cache)
        if stored.get("collection_hash") == key:
            demos = [{k: v.numpy() for k, v in d.items()} for d in stored["demos"]]
            return demos, Vocabulary(stored["vocabulary"])
    vocabulary = Vocabulary.build(ep.instruction for ep in episodes)
    demos = collect_demonstrations(
        env, episodes, vocabulary, codec, collection["memory"], collection["memory_tokens"], collection["max_words"],
        noise=collection["noise"], seed=collection["seed"], progress=progress,
    )
    save_torch({"collection_hash": key, "vocabulary": vocabulary.tokens,
                "demos": [{k: torch.from_numpy(v) for k, v in d.items()} for d in demos]}, cache)
    return demos, vocabulary
