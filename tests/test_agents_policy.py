"""The FLAME-style policy: model shapes, strided history, a tiny imitation run that learns and resumes, and the
agent protocol with and without memory tokens."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vlnkit.agents.base import create
from vlnkit.agents.policy import agent as _registers  # noqa: F401  (registers "policy")
from vlnkit.agents.policy.features import EXTRA_MEMORY_FEATURES, Vocabulary, link_bins, strided_history, subgoal_rows
from vlnkit.agents.policy.model import FlamePolicy, MixerSelfAttention, PolicyConfig
from vlnkit.agents.policy import train as train_module
from vlnkit.agents.policy.train import train_policy
from vlnkit.config import load_config
from vlnkit.memory.checkpoint import load_torch


def test_forward_shapes_and_memory_query_gradient() -> None:
    config = PolicyConfig(vocab_size=20, categories=5, memory_dim=48, num_actions=4, d_model=16, heads=2, layers=2)
    model = FlamePolicy(config)
    b = 2
    words = torch.tensor([[2, 3, 4, 0], [5, 6, 0, 0]])
    instruction = model.encode_instruction(words)
    assert instruction.shape == (b, config.instruction_slots, 16)
    panorama, links = torch.rand(b, 8, 5), torch.zeros(b, 8)
    visual = model.visual_tokens(panorama, links)
    assert visual.shape == (b, 8, 16)
    hidden = torch.zeros(b, 16)
    query = model.memory_query(hidden, visual)
    assert query.shape == (b, 48)
    history = torch.rand(b, 3, 16)
    memory = torch.zeros(b, 3, 48 + EXTRA_MEMORY_FEATURES)
    memory[0, 0, :48] = torch.rand(48)
    memory[0, 0, -1] = 1.0
    rows = torch.zeros(b, config.subgoals, 7, dtype=torch.long)
    rows[:, 0] = torch.tensor([4, 1, 1, 2, 0, 0, 0])    # turn left at the first intersection
    rows[0, 1] = torch.tensor([5, 0, 8, 2, 3, 0, 0])    # stop at the landmark of category 2
    static = model.encode_subgoals(rows)
    subgoals = model.subgoal_tokens(static, panorama, links)
    assert subgoals[0].shape == (b, config.subgoals, 16) and subgoals[1][:, :2].tolist() == [[False, False],
                                                                                             [False, True]]
    # A sub-goal token reads the current view's column of the category it names, and no other column.
    other = panorama.clone()
    other[..., [0, 1, 3, 4]] = torch.rand(b, 8, 4)
    torch.testing.assert_close(model.subgoal_tokens(static, other, links)[0], subgoals[0])
    # It also reads where streets leave: a new link bin moves every real sub-goal token.
    street = links.clone()
    street[:, 2] = 1.0
    turned = model.subgoal_tokens(static, panorama, street)[0]
    assert not torch.allclose(turned[0, 0], subgoals[0][0, 0]) and not torch.allclose(turned[1, 0], subgoals[0][1, 0])
    cafe = panorama.clone()
    cafe[..., 2] = torch.rand(b, 8)
    moved = model.subgoal_tokens(static, cafe, links)[0]
    assert not torch.allclose(moved[0, 1], subgoals[0][0, 1])
    torch.testing.assert_close(moved[:, 0], subgoals[0][:, 0])
    ages = torch.tensor([1, 2, 6])
    logits, h = model.step(instruction, subgoals, visual, history, ages, torch.zeros(b, 3, dtype=torch.bool),
                           memory, query, hidden)
    assert logits.shape == (b, 4) and h.shape == (b, 16)
    assert model.summary(panorama, links).shape == (b, 16)
    # Padding rows are masked: whatever a padded sub-goal token holds, the decision is the same.
    tokens, pad = subgoals
    noisy = (tokens + torch.randn_like(tokens) * pad[..., None], pad)
    again = model.step(instruction, noisy, visual, history, ages, torch.zeros(b, 3, dtype=torch.bool),
                       memory, query, hidden)[0]
    torch.testing.assert_close(again, logits)
    logits[0].sum().backward()
    assert model.memory_query_net.weight.grad.abs().sum() > 0   # the query learns through the memory tokens
    assert model.subgoal_fields[4].weight.grad[3].abs().sum() > 0   # and the sub-goal's category reaches the logits


def test_mixer_self_attention_with_softmax_equals_multihead_attention() -> None:
    torch.manual_seed(0)
    reference = torch.nn.MultiheadAttention(16, 4, batch_first=True)
    mixed = MixerSelfAttention(16, 4, "softmax")
    with torch.no_grad():
        mixed.in_proj.weight.copy_(reference.in_proj_weight)
        mixed.in_proj.bias.copy_(reference.in_proj_bias)
        mixed.out_proj.load_state_dict(reference.out_proj.state_dict())
    x = torch.randn(3, 5, 16)
    torch.testing.assert_close(mixed(x, x, x)[0], reference(x, x, x, need_weights=False)[0])
    assert sum(p.numel() for p in mixed.parameters()) == sum(p.numel() for p in reference.parameters())


@pytest.mark.parametrize("mixer", ["mlp", "taylor", "key_only"])
def test_hybrid_policy_swaps_only_the_self_attention(mixer: str) -> None:
    sizes = dict(vocab_size=20, categories=5, memory_dim=48, num_actions=4, d_model=16, heads=2, layers=2)
    standard, hybrid = FlamePolicy(PolicyConfig(**sizes)), FlamePolicy(PolicyConfig(**sizes, self_mixer=mixer))
    assert sum(p.numel() for p in hybrid.parameters()) == sum(p.numel() for p in standard.parameters())
    assert all(isinstance(block.self_attn, MixerSelfAttention) for block in hybrid.blocks)
    assert all(isinstance(block.cross_attn, torch.nn.MultiheadAttention) for block in hybrid.blocks)
    x = torch.randn(2, 4, 16)
    out = hybrid.blocks[0].self_attn(x, x, x)[0]
    moved = x.clone()
    moved[:, 2] += torch.randn(2, 16)
    changed = (hybrid.blocks[0].self_attn(moved, moved, moved)[0] - out).abs().amax(-1)
    # No token mixing: only the perturbed query changes; every other mixer lets it reach query 0.
    assert (changed[:, 0] < 1e-6).all() == (mixer == "mlp")
    assert (changed[:, 2] > 1e-6).all()


def test_subgoal_rows_of_a_parsed_instruction() -> None:
    from vlnkit.agents.modular.language import LandmarkLexicon

    lexicon = LandmarkLexicon(["bank", "cafe"], [("Joe's Beans", "cafe")])
    rows = subgoal_rows("Turn left at the second intersection. Stop next to Joe's Beans on your right.", lexicon, 3)
    # turn (4th action) left (1st direction) at an intersection (1st trigger), count 2 (+1); then stop (5th)
    # with the landmark trigger (8th), count 1, category cafe (index 1, +1); the third row is padding.
    assert rows.tolist() == [[4, 1, 1, 3, 0, 0, 0], [5, 2, 8, 2, 2, 0, 0], [0, 0, 0, 0, 0, 0, 0]]


def test_strided_history_and_features() -> None:
    assert strided_history(0, 4, 4) == []
    assert strided_history(3, 4, 4) == [0, 1, 2]
    assert strided_history(13, 4, 4) == [1, 5, 9, 10, 11, 12]
    assert link_bins(np.array([90.0, 270.0, -1.0]), 90.0).tolist() == [1, 0, 0, 0, 1, 0, 0, 0]
    vocab = Vocabulary.build(["Turn left at the bank.", "Turn right."])
    assert vocab.tokens[:3] == ["<pad>", "<unk>", "turn"]
    assert vocab.encode("turn up", 8).tolist() == [vocab.ids["turn"], 1]


def _train_config(out: Path, epochs: int) -> object:
    return load_config("train_policy", [
        f"out={out}", "episodes=4", f"train.epochs={epochs}", "train.batch_size=2", "train.lr=3e-3",
        "train.warmup_epochs=0", "model.d_model=16", "model.heads=2", "model.layers=1", "model.queries=2",
        "memory_variant=stm_only", "progress=false", "noise=0.0", "train.threads=1", "cities=[0]", "dagger.rounds=1",
        "dagger.eval_episodes=3",
    ])


class _Interrupted(Exception):
    """Stands for a kill right after a checkpoint was written."""


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    folder = tmp_path_factory.mktemp("policy")
    straight = train_policy(_train_config(folder / "straight.pt", 4))
    saves = []

    def save_then_die(obj: object, path: Path) -> Path:
        written = real_save(obj, path)
        if not str(path).endswith(train_module.DEMOS_SUFFIX):
            saves.append(path)
            if len(saves) == 2:
                raise _Interrupted
        return written

    real_save = train_module.save_torch
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train_module, "save_torch", save_then_die)
        with pytest.raises(_Interrupted):
            train_policy(_train_config(folder / "resumed.pt", 4))
    interrupted = load_torch(folder / "resumed.pt")
    demos = folder / "resumed.pt.demos.pt"
    stamp = demos.stat().st_mtime_ns
    resumed = train_policy(_train_config(folder / "resumed.pt", 4))
    return {"straight": straight, "resumed": resumed, "interrupted_epoch": interrupted["epoch"], "folder": folder,
            "demos_reused": demos.stat().st_mtime_ns == stamp}


def test_tiny_training_lowers_the_imitation_loss(trained: dict) -> None:
    straight = trained["straight"]
    assert straight["epochs"] == 4 and straight["episodes"] == 4
    assert straight["nll"] < straight["first_epoch_nll"]
    history = load_torch(trained["folder"] / "straight.pt")["history"]
    assert [h["nll"] for h in history] == sorted((h["nll"] for h in history), reverse=True)


def test_training_resumes_from_its_checkpoint(trained: dict) -> None:
    resumed, straight = trained["resumed"], trained["straight"]
    assert trained["interrupted_epoch"] == 2
    assert resumed["epochs"] == 4
    assert trained["demos_reused"]
    # Killed after two epochs and started again, the run ends where the uninterrupted one did.
    assert resumed["nll"] == pytest.approx(straight["nll"], rel=1e-4)
    finished = train_policy(_train_config(trained["folder"] / "resumed.pt", 4))
    assert finished["nll"] == pytest.approx(resumed["nll"])


@pytest.mark.parametrize("settings", [
    {"memory": "full"}, {"memory": "full", "memory_tokens": False}, {"memory": "none"},
])
def test_policy_agent_acts_on_observations_alone(trained: dict, settings: dict) -> None:
    from vlnkit.envs.street.env import StreetEnv
    from vlnkit.envs.synth import default_city

    env = StreetEnv(task="touchdown", data_dir=default_city(), split="dev", episode_kinds="all", panorama="auto")
    config = {"checkpoint": str(trained["folder"] / "resumed.pt"), "memory_overrides": {"ltm": {"depth": 2}}, **settings}
    agent = create("policy", config, num_actions=int(env.action_space.n))
    assert agent.uses_info is False
    obs, _ = env.reset(options={"episode_index": 0})
    agent.reset(obs, None, 0)
    done, steps = False, 0
    while not done:
        action = agent.act(obs, None)
        assert 0 <= action < env.action_space.n
        obs, _, terminated, truncated, _ = env.step(action)
        done = terminated or truncated
        steps += 1
    assert steps <= env.max_steps
    assert (agent.memory.writes > 0) == (settings.get("memory_tokens", True) and settings["memory"] != "none")


def test_policy_agent_needs_a_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="vlnkit train policy"):
        create("policy", {"checkpoint": str(tmp_path / "missing.pt")})


def _dagger_config(out: Path) -> object:
    return load_config("train_policy", [
        f"out={out}", "cities=[0]", "episodes=4", "train.epochs=2", "train.batch_size=2", "train.lr=3e-3", "train.warmup_epochs=0",
        "model.d_model=16", "model.heads=2", "model.layers=1", "model.queries=2", "memory_variant=stm_only",
        "progress=false", "train.threads=1", "dagger.rounds=2", "dagger.beta=0.0", "dagger.episodes_per_round=3",
        "dagger.eval_episodes=2", "dagger.eval_memory=[none]",
    ])


def test_dagger_labels_the_policys_own_states_and_resumes_across_rounds(tmp_path: Path) -> None:
    straight = train_policy(_dagger_config(tmp_path / "straight.pt"))
    assert [(c["round"], c["episodes"]) for c in straight["curve"]] == [(0, 4), (1, 7)]
    assert straight["epochs"] == 4 and set(straight["curve"][1]) >= {"train_none_tc", "dev_none_tc", "nll"}
    assert (tmp_path / "straight.pt.curves.png").stat().st_size > 0
    # Round 1 ran the policy (beta 0): replaying what it did, every label is the route teacher's action
    # at the state the policy reached, and the policy left the teacher's choice somewhere.
    cfg = _dagger_config(tmp_path / "straight.pt")
    env = train_module._make_env(train_module._releases(cfg)[0], "train", cfg)
    rounds = load_torch(tmp_path / "straight.pt.demos.pt")["rounds"]
    # Round 0's exploration (noise 0.1) never stops a demonstration early: STOP is taken only as the last step.
    for demo in rounds[0]:
        assert (demo["taken"][:-1] != 0).all() and int(demo["taken"][-1]) == int(demo["label"][-1])
    demos = rounds[1]
    assert len(demos) == 3
    deviated = 0
    for demo in demos:
        obs, info = env.reset(options={"episode_id": env.episodes[int(demo["origin"][1])].episode_id})
        for label, taken in zip(demo["label"].tolist(), demo["taken"].tolist()):
            assert label == info["gold_action"]
            deviated += label != taken
            obs, _, terminated, truncated, info = env.step(taken)
        assert terminated or truncated
    assert deviated > 0

    # Killed right after round 0's evaluation was saved, the run resumes into round 1 and ends where the
    # uninterrupted one did.
    saves: list[Path] = []
    real_save = train_module.save_torch

    def save_then_die(obj: object, path: Path) -> Path:
        written = real_save(obj, path)
        if not str(path).endswith(train_module.DEMOS_SUFFIX):
            saves.append(path)
            if len(saves) == 3:
                raise _Interrupted
        return written

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train_module, "save_torch", save_then_die)
        with pytest.raises(_Interrupted):
            train_policy(_dagger_config(tmp_path / "resumed.pt"))
    assert (load_torch(tmp_path / "resumed.pt")["round"], load_torch(tmp_path / "resumed.pt")["epoch"]) == (1, 0)
    resumed = train_policy(_dagger_config(tmp_path / "resumed.pt"))
    assert resumed["nll"] == pytest.approx(straight["nll"], rel=1e-5)
    assert resumed["curve"] == straight["curve"]


def test_a_policy_that_always_goes_forward_has_no_decision_accuracy() -> None:
    """Accuracy over all steps rewards FORWARD-majority guessing; decision accuracy (turns and stops) does not."""
    config = PolicyConfig(vocab_size=10, categories=3, memory_dim=8, num_actions=4, d_model=8, heads=2, layers=1,
                          queries=2, subgoals=2)
    model = FlamePolicy(config)
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.copy_(torch.tensor([0.0, 50.0, 0.0, 0.0]))   # FORWARD whatever the input
    labels = np.array([1, 1, 1, 2, 0])     # three FORWARD, a LEFT and a STOP
    demo = {
        "words": np.array([2, 3]), "subgoals": np.zeros((2, 7), dtype=np.int64),
        "panorama": np.random.rand(5, 8, 3).astype(np.float32), "links": np.zeros((5, 8), dtype=np.float32),
        "label": labels, "taken": labels, "embedding": np.random.rand(5, 8).astype(np.float32),
        "memory": np.zeros((5, 2, 8 + EXTRA_MEMORY_FEATURES), dtype=np.float32),
    }
    losses = train_module.episode_losses(model, train_module._batch([demo]), torch.ones(1))
    assert float(losses["accuracy"]) == pytest.approx(3 / 5)
    assert float(losses["decision_accuracy"]) == 0.0
