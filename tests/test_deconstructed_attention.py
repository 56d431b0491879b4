"""Deconstructing Attention (arXiv 2510.11602): the relaxed mixers, the attention indicators, the LM's Q/K
sources and layer schedules, and the experiment end to end (the CPU tests of the sheet, section 10)."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from vlnkit.envs.datasets.vlnce import VLNCEEpisode, write_vlnce_split
from vlnkit.eval.experiments.deconstructed_attention import (
    DeconLM,
    LayerSpec,
    Tokenizer,
    house_instructions,
    layer_specs,
    split_documents,
    text_file_documents,
    used_parameters,
    variant_layers,
)
from vlnkit.perception.kernels import available_token_mixers, create_token_mixer
from vlnkit.perception.kernels.deconstructed import (
    attention_entropy,
    attention_indicators,
    attention_sink,
    key_only_attention,
    key_only_attention_map,
    key_only_attention_recurrent,
    local_focus,
    minmax_normalise,
    taylor_attention,
    taylor_attention_recurrent,
    taylor_kernel,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

VARIANTS = {
    "softmax": LayerSpec(),
    "mlp": LayerSpec("mlp"),
    "taylor": LayerSpec("taylor"),
    "key_only": LayerSpec("key_only"),
    "rnd_emb": LayerSpec(qk="random"),
    "fixed_seq": LayerSpec(qk="fixed"),
    "static_emb": LayerSpec(qk="static"),
}
VOCAB, D, HEADS, N, LAYERS = 11, 16, 2, 10, 4


def qkv(seed: int, b: int = 2, h: int = 3, n: int = 9, d: int = 4, dtype: torch.dtype = torch.float64):
    gen = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(b, h, n, d, generator=gen, dtype=dtype) for _ in range(3))


def lm(spec: LayerSpec, schedule: str = "uniform", seed: int = 0) -> DeconLM:
    fixed = torch.arange(N * 2) % VOCAB
    return DeconLM(VOCAB, layer_specs(spec, schedule, LAYERS), D, HEADS, 24, N, fixed_tokens=fixed,
                   init_std=0.3, random_std=1.0, seed=seed).double().eval()


def ids(seed: int, b: int = 2) -> torch.Tensor:
    return torch.randint(0, VOCAB, (b, N), generator=torch.Generator().manual_seed(seed))


def maps(model: DeconLM, x: torch.Tensor) -> list[torch.Tensor]:
    record: list = []
    with torch.no_grad():
        model(x, record=record)
    return record


# ---------------------------------------------------------------------------------------------- mixers

def test_registered_and_mixing_per_head_both_causal_and_not() -> None:
    assert {"mlp", "taylor", "key_only"} <= set(available_token_mixers())
    q, k, v = qkv(0)
    for name in ("mlp", "taylor", "key_only"):
        for causal in (True, False):
            out = create_token_mixer(name, causal=causal)(q, k, v)
            assert out.shape == v.shape and torch.isfinite(out).all()
    # non-causal, the last query sees what every query sees: its output equals the causal one at the end
    for name in ("taylor", "key_only"):
        causal, full = create_token_mixer(name)(q, k, v), create_token_mixer(name, causal=False)(q, k, v)
        assert torch.allclose(causal[:, :, -1], full[:, :, -1])
        assert not torch.allclose(causal[:, :, 0], full[:, :, 0])


def test_mlp_mixes_no_tokens() -> None:
    q, k, v = qkv(1)
    mixer = create_token_mixer("mlp")
    out = mixer(q, k, v)
    assert torch.allclose(out, F.silu(q) * v)
    for j in range(q.shape[2]):
        q2, k2, v2 = q.clone(), k.clone(), v.clone()
        for t in (q2, k2, v2):
            t[:, :, j] += torch.randn_like(t[:, :, j])
        out2 = mixer(q2, k2, v2)
        others = [i for i in range(q.shape[2]) if i != j]
        assert torch.equal(out2[:, :, others], out[:, :, others])
        assert not torch.allclose(out2[:, :, j], out[:, :, j])
    # the whole uniform-mlp LM: logits at i depend on token i only
    model, x = lm(VARIANTS["mlp"]), ids(2)
    y = x.clone()
    y[:, 3] = (y[:, 3] + 1) % VOCAB
    with torch.no_grad():
        a, b = model(x), model(y)
    assert torch.allclose(a[:, [i for i in range(N) if i != 3]], b[:, [i for i in range(N) if i != 3]])
    assert not torch.allclose(a[:, 3], b[:, 3])


def test_key_only_column_ratio_depends_on_the_key_only() -> None:
    q, k, _ = qkv(3)
    attn = key_only_attention_map(q, k)
    s = (q * torch.sigmoid(q) * k).sum(-1) / math.sqrt(q.shape[-1])
    n = q.shape[2]
    for i in range(n):
        for j in range(i + 1):
            for j2 in range(i + 1):
                ratio = attn[:, :, i, j] / attn[:, :, i, j2]
                assert torch.allclose(ratio, torch.exp(s[:, :, j] - s[:, :, j2]))
    assert torch.all(attn.triu(1) == 0)
    full = key_only_attention_map(q, k, causal=False)
    assert torch.allclose(full, full[:, :, :1].expand_as(full))  # non-causal: one row for every query


@pytest.mark.parametrize("name", ["key_only", "taylor"])
def test_recurrent_equals_parallel_and_streams(name: str) -> None:
    q, k, v = qkv(4, n=12)
    parallel_fn, recurrent_fn = {"key_only": (key_only_attention, key_only_attention_recurrent),
                                 "taylor": (taylor_attention, taylor_attention_recurrent)}[name]
    expected = parallel_fn(q, k, v)
    out, _ = recurrent_fn(q, k, v)
    assert torch.allclose(out, expected)
    first, state = recurrent_fn(q[:, :, :5], k[:, :, :5], v[:, :, :5])
    rest, _ = recurrent_fn(q[:, :, 5:], k[:, :, 5:], v[:, :, 5:], state)
    assert torch.allclose(torch.cat([first, rest], dim=2), expected)
    mixer = create_token_mixer(name, form="recurrent")
    assert torch.allclose(mixer(q, k, v), expected)
    with pytest.raises(ValueError):
        create_token_mixer(name, causal=False, form="recurrent")


@pytest.mark.parametrize("name", ["key_only", "taylor"])
def test_causality(name: str) -> None:
    q, k, v = qkv(5)
    mixer = create_token_mixer(name)
    out = mixer(q, k, v)
    t = 4
    q2, k2, v2 = q.clone(), k.clone(), v.clone()
    for x in (q2, k2, v2):
        x[:, :, t + 1:] = torch.randn_like(x[:, :, t + 1:]) * 3
    out2 = mixer(q2, k2, v2)
    assert torch.allclose(out2[:, :, : t + 1], out[:, :, : t + 1])
    assert not torch.allclose(out2[:, :, t + 1:], out[:, :, t + 1:])


def test_taylor_kernel_is_at_least_a_half() -> None:
    gen = torch.Generator().manual_seed(6)
    x = torch.cat([torch.randn(10000, generator=gen) * s for s in (0.1, 1.0, 10.0, 1000.0)])
    value = taylor_kernel(x)
    assert value.min() >= 0.5
    assert torch.isclose(taylor_kernel(torch.tensor(-1.0)), torch.tensor(0.5))
    q, k, _ = qkv(7, d=8)
    q, k = q * 5, k * 5
    assert (taylor_kernel(q @ k.transpose(-1, -2) / math.sqrt(8)) >= 0.5).all()


@pytest.mark.parametrize("causal", [True, False])
def test_taylor_matches_a_naive_loop(causal: bool) -> None:
    q, k, v = qkv(8, b=1, h=2, n=6, d=3)
    out = taylor_attention(q, k, v, causal)
    d = q.shape[-1]
    for h in range(2):
        for i in range(6):
            num, den = [0.0] * 3, 0.0
            for j in range(i + 1 if causal else 6):
                x = sum(float(q[0, h, i, c]) * float(k[0, h, j, c]) for c in range(d)) / math.sqrt(d)
                w = 1 + x + x * x / 2
                den += w
                num = [num[e] + w * float(v[0, h, j, e]) for e in range(3)]
            assert out[0, h, i].tolist() == pytest.approx([n / den for n in num], rel=1e-9, abs=1e-12)


# ---------------------------------------------------------------------------------------------- indicators

def test_indicators_of_uniform_causal_and_one_hot_maps() -> None:
    n, h = 8, 2
    uniform = torch.ones(n, n).tril()
    uniform = (uniform / uniform.sum(-1, keepdim=True)).expand(1, h, n, n)
    mean_inv = sum(1 / i for i in range(1, n + 1)) / n
    assert torch.allclose(attention_sink(uniform), torch.full((h,), mean_inv))
    assert torch.allclose(local_focus(uniform, 0), torch.full((h,), mean_inv))
    expected_entropy = sum(math.log(i) for i in range(1, n + 1)) / n
    assert torch.allclose(attention_entropy(uniform), torch.full((h,), expected_entropy))
    one_hot = torch.zeros(1, h, n, n)
    one_hot[..., 0] = 1.0
    ind = attention_indicators(one_hot)
    assert torch.allclose(ind["sink"], torch.ones(h)) and torch.all(ind["entropy"] == 0)
    assert torch.allclose(ind["concentration"], torch.full((h,), math.sqrt(n)))
    assert float(ind["head_div"]) == 0.0
    assert torch.allclose(ind["locfoc_0"], torch.full((h,), 1 / n))  # only row 0 is at distance 0 from token 0
    assert torch.allclose(ind["locfoc_1"], torch.full((h,), 1 / (n - 1)))  # of rows 1..n-1, row 1
    # two heads that disagree: one on the first token, one on itself -> std 1/2 in the first column and on the
    # diagonal below row 0 (2 (n - 1) cells), 0 elsewhere
    two = torch.zeros(1, 2, n, n)
    two[0, 0, :, 0] = 1.0
    two[0, 1] = torch.eye(n)
    assert float(attention_indicators(two)["head_div"]) == pytest.approx((n - 1) * 2 / (n * (n + 1)))
    assert minmax_normalise([2.0, 4.0, 3.0]) == [0.0, 1.0, 0.5]


# ---------------------------------------------------------------------------------------------- Q/K sources

@pytest.mark.parametrize("name", ["rnd_emb", "fixed_seq"])
def test_input_independent_maps(name: str) -> None:
    model = lm(VARIANTS[name])
    a, b = maps(model, ids(10)), maps(model, ids(11))
    assert len(a) == LAYERS
    for x, y in zip(a, b):
        assert torch.allclose(x, y) and torch.allclose(x[0], x[1])
    standard = maps(lm(VARIANTS["softmax"]), ids(10)), maps(lm(VARIANTS["softmax"]), ids(11))
    assert not torch.allclose(standard[0][1], standard[1][1])
    # the fixed stream's maps are those of the standard model reading the fixed text
    if name == "fixed_seq":
        std = lm(VARIANTS["softmax"])
        std.load_state_dict(model.state_dict(), strict=False)
        own = maps(std, model.fixed_tokens)
        assert all(torch.allclose(x[0], o[0]) for x, o in zip(a, own))


def test_static_maps_depend_on_token_ids_only() -> None:
    model, x = lm(VARIANTS["static_emb"]), ids(12)
    before = maps(model, x)
    with torch.no_grad():
        for p in model.blocks[0].parameters():
            p.add_(torch.randn_like(p))
        for p in model.blocks[1].gate.parameters():
            p.add_(torch.randn_like(p))
    after = maps(model, x)
    assert all(torch.allclose(b, a) for b, a in zip(before[1:], after[1:]))
    assert not torch.allclose(before[0], after[0])  # layer 1's own W_Q, W_K changed
    assert not torch.allclose(before[1], maps(model, ids(13))[1])  # other ids, other maps
    standard, y = lm(VARIANTS["softmax"]), ids(12)
    before = maps(standard, y)
    with torch.no_grad():
        for p in standard.blocks[0].parameters():
            p.add_(torch.randn_like(p))
    assert not torch.allclose(before[1], maps(standard, y)[1])


# ---------------------------------------------------------------------------------------------- schedules

def test_schedules_for_24_layers_follow_the_paper() -> None:
    def one_indexed(schedule: str) -> list[int]:
        return [i + 1 for i in variant_layers(schedule, 24)]

    assert one_indexed("uniform") == list(range(1, 25))
    assert one_indexed("hybrid") == one_indexed("odd") == list(range(1, 25, 2))
    assert one_indexed("even") == list(range(2, 25, 2))
    assert one_indexed("top") == list(range(13, 25))
    assert one_indexed("middle") == list(range(7, 19))
    assert one_indexed("bottom") == list(range(1, 7))
    assert one_indexed("quarter") == [l for l in range(1, 25) if l not in (4, 8, 12, 16, 20, 24)]
    assert one_indexed("first") == list(range(2, 25))
    assert one_indexed("last") == list(range(1, 24))
    assert one_indexed("bilateral") == list(range(2, 24))
    assert [i + 1 for i in variant_layers("quarter", 4)] == [1, 2, 3]
    with pytest.raises(ValueError):
        variant_layers("sideways", 4)


def test_skip_removes_the_variant_layers() -> None:
    model, x = lm(VARIANTS["taylor"], "hybrid"), ids(14)
    removed = variant_layers("skip", LAYERS)
    assert [model.specs[i].mixer for i in range(LAYERS)] == ["taylor", "softmax", "taylor", "softmax"]
    with torch.no_grad():
        skipped, full = model(x, skip=removed), model(x)
        for i in removed:
            for p in model.blocks[i].parameters():
                p.add_(torch.randn_like(p))
        assert torch.allclose(model(x, skip=removed), skipped)
        assert not torch.allclose(model(x), full)
    record: list = []
    with torch.no_grad():
        model(x, skip=removed, record=record)
    assert len(record) == LAYERS - len(removed)


def test_parameter_counts_match_across_variants() -> None:
    """The paper keeps MHA so every variant has the standard parameter count; here every variant and schedule
    has the same modules. Only mlp layers leave W_K (d^2 weights) unused."""
    counts, used = {}, {}
    x = ids(15)
    for name, spec in VARIANTS.items():
        for schedule in ("uniform", "hybrid"):
            model = lm(spec, schedule)
            counts[name, schedule] = sum(p.numel() for p in model.parameters())
            used[name, schedule] = used_parameters(model, x)
    total = counts["softmax", "uniform"]
    assert set(counts.values()) == {total}
    for (name, schedule), n in used.items():
        mlp_layers = len(variant_layers(schedule, LAYERS)) if name == "mlp" else 0
        assert n == total - mlp_layers * D * D


# ---------------------------------------------------------------------------------------------- corpus, end to end

def test_corpus_sources_and_tokenizer(tmp_path) -> None:
    episodes = [VLNCEEpisode(str(i), str(i), "synth/h/h.glb", (0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 1.0), text)
                for i, text in enumerate(["Turn left. Stop by the sofa.", "Walk past the bed."], start=1)]
    write_vlnce_split(episodes, tmp_path / "train" / "train.json.gz")
    assert house_instructions(tmp_path) == ["Turn left. Stop by the sofa.", "Walk past the bed."]
    (tmp_path / "notes.txt").write_text("first line\n\n  second line \n")
    assert text_file_documents(tmp_path / "notes.txt") == ["first line", "second line"]
    docs = [f"doc {i}" for i in range(20)]
    train, val = split_documents(docs, 0.25, seed=0)
    assert len(val) == 5 and sorted(train + val) == sorted(docs)
    assert split_documents(docs, 0.25, seed=0) == (train, val) and split_documents(docs, 0.25, seed=1) != (train, val)
    tok = Tokenizer(["ab", "ba c"], "char")
    assert tok.itos == ["<unk>", "\n", " ", "a", "b", "c"]
    assert tok.encode(["abz"]).tolist() == [3, 4, 0, 1]
    words = Tokenizer(["Go left, then stop."], "word")
    assert words.encode(["go right."]).tolist() == [words.stoi["go"], 0, words.stoi["."], words.stoi["\n"]]


def test_experiment_end_to_end(tmp_path) -> None:
    from vlnkit.eval.experiments.runner import run_experiment

    overrides = ["variants=[softmax,taylor]", "schedules=[uniform,hybrid,skip]", "steps=60", "model.layers=2",
                 "model.d_model=32", "corpus.houses_count=0", "eval_windows=16", "checkpoint_every=30",
                 "progress=false", "threads=1", f"out={tmp_path}"]
    run_dir = run_experiment("deconstructed_attention", overrides)
    data = json.loads((run_dir / "results.json").read_text())
    res = data["results"]
    vocab = res["vocab_size"]
    table = data["tables"][0]
    assert table["header"][:5] == ["variant", "relaxes", "uniform", "hybrid", "skip"]
    assert [r[0] for r in table["rows"]] == ["softmax", "taylor"]
    assert set(res["perplexity"]["taylor"]) == {"uniform", "hybrid", "skip"}
    softmax = res["perplexity"]["softmax"]["uniform"]
    assert 1.0 < softmax < vocab  # trained: better than a uniform model over the vocabulary
    assert table["rows"][0][2] == softmax
    assert res["runs"]["taylor/skip"]["removed_layers"] == [1]
    assert len(res["runs"]["softmax/uniform"]["indicators"]) == 2
    assert (run_dir / "perplexity.png").is_file()
    # resuming from the finished runs' states reproduces the results without training again
    (run_dir / "results.json").unlink()
    again = json.loads((run_experiment("deconstructed_attention", overrides) / "results.json").read_text())
    assert again["results"]["perplexity"] == res["perplexity"]
