"""Associative-capacity probes (vlnkit.memory.capacity): the Hebbian memory against the derivation and hand
examples, the delta rule, the capacity and slope estimators, and the LTM and lightning-state probes on tiny
sizes. Expected values are computed by hand or from closed forms, never by the code under test."""

import math

import numpy as np
import pytest
import torch

from vlnkit.memory import LTMConfig, Mem4NavConfig
from vlnkit.memory import capacity as cap
from vlnkit.memory.ltm import LongTermMemory


pytestmark = pytest.mark.usefixtures("one_torch_thread")   # tests/conftest.py


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_mean_cosine_at_d64_n64_matches_the_derivation_over_20_seeds():
    # E[cos] = 1/sqrt(1 + (N-1)/d_k) = 1/sqrt(1 + 63/64) = 0.7107 (by hand)
    means = []
    for seed in range(20):
        g = _gen(seed)
        keys = cap.sample_keys("random", 64, 64, g, dtype=torch.float64)
        values = cap.sample_values("random", 64, 1024, g, dtype=torch.float64)
        out = cap.retrieve(cap.hebbian_memory(keys, values), keys)
        means.append(float(torch.nn.functional.cosine_similarity(out, values, dim=1).mean()))
    assert all(abs(m - 0.711) < 0.03 for m in means)
    assert abs(np.mean(means) - 0.711) < 0.01


def test_orthonormal_keys_retrieve_exactly_and_one_pair_is_error_free():
    g = _gen(1)
    keys = cap.sample_keys("orthonormal", 32, 32, g, dtype=torch.float64)
    assert torch.allclose(keys @ keys.T, torch.eye(32, dtype=torch.float64), atol=1e-12)
    values = cap.sample_values("random", 32, 100, g, dtype=torch.float64)
    out = cap.retrieve(cap.hebbian_memory(keys, values), keys)
    cos = torch.nn.functional.cosine_similarity(out, values, dim=1)
    assert torch.allclose(cos, torch.ones(32, dtype=torch.float64), atol=1e-12)
    assert float((out - values).abs().max()) < 1e-12
    one_key = cap.sample_keys("random", 1, 16, g, dtype=torch.float64)
    one_value = values[:1]
    assert float((cap.retrieve(cap.hebbian_memory(one_key, one_value), one_key) - one_value).abs().max()) < 1e-12


def test_every_rule_is_error_free_with_one_stored_pair():
    curves = cap.capacity_curves(16, 32, [1], 3, _gen(2), dtype=torch.float64)
    for rule in cap.RULES:
        m = curves[rule]
        assert m["mean_cos"][0] == pytest.approx(1.0, abs=1e-12), rule
        assert m["accuracy"][0] == 1.0 and m["all_within"][0] == 1.0 and m["adversarial"][0] == 1.0, rule
        assert m["mean_error"][0] < 1e-12, rule


def test_hebbian_two_by_two_by_hand():
    keys = torch.tensor([[1.0, 0.0], [0.6, 0.8]], dtype=torch.float64)
    values = torch.tensor([[1.0, 2.0], [3.0, -1.0]], dtype=torch.float64)
    memory = cap.hebbian_memory(keys, values)
    # v1 k1^T + v2 k2^T = [[1, 0], [2, 0]] + [[1.8, 2.4], [-0.6, -0.8]]
    assert torch.allclose(memory, torch.tensor([[2.8, 2.4], [1.4, -0.8]], dtype=torch.float64))
    # o1 = v1 + 0.6 v2, o2 = 0.6 v1 + v2
    expected = torch.tensor([[2.8, 1.4], [3.6, 0.2]], dtype=torch.float64)
    assert torch.allclose(cap.retrieve(memory, keys), expected)
    weights = cap.retrieval_weights("hebbian", keys, [2])[0]
    assert torch.allclose(weights, torch.tensor([[1.0, 0.6], [0.6, 1.0]], dtype=torch.float64))
    metrics = cap.retrieval_metrics(weights @ values, values, eps=0.5, weights=weights)
    # |o1 - v1| = 0.6 |v2| = 0.6 sqrt(10) > 0.5 sqrt(5): not all within eps; worst case |0.6| = 0.6 > 0.5
    assert metrics["all_within"] == 0.0 and metrics["adversarial"] == 0.0
    assert cap.retrieval_metrics(weights @ values, values, eps=0.7, weights=weights)["adversarial"] == 1.0


def test_delta_rule_by_hand_and_exact_with_orthonormal_keys():
    keys = torch.tensor([[1.0, 0.0], [0.6, 0.8]], dtype=torch.float64)
    values = torch.tensor([[1.0, 2.0], [3.0, -1.0]], dtype=torch.float64)
    # M1 = v1 k1^T; error of pair 2: v2 - M1 k2 = (3, -1) - (0.6, 1.2) = (2.4, -2.2); M2 = M1 + err k2^T
    expected = torch.tensor([[1.0 + 1.44, 1.92], [2.0 - 1.32, -1.76]], dtype=torch.float64)
    assert torch.allclose(cap.delta_memory(keys, values, eta=1.0), expected)
    g = _gen(3)
    ortho = cap.sample_keys("orthonormal", 24, 24, g, dtype=torch.float64)
    vals = cap.sample_values("random", 24, 40, g, dtype=torch.float64)
    assert float((cap.retrieve(cap.delta_memory(ortho, vals, eta=1.0), ortho) - vals).abs().max()) < 1e-12
    # with random keys and eta = 1 the last pair written is always retrieved exactly (its key is unit)
    rand = cap.sample_keys("random", 40, 16, g, dtype=torch.float64)
    more = cap.sample_values("random", 40, 8, g, dtype=torch.float64)
    snapshots = cap.delta_memory(rand, more, eta=1.0, snapshots=[5, 40])
    for n, memory in zip([5, 40], snapshots):
        assert torch.allclose(cap.retrieve(memory, rand[n - 1 : n]), more[n - 1 : n], atol=1e-12)
    # the delta rule's retrieval weights reproduce its retrievals of any values
    weights = cap.retrieval_weights("delta", rand, [40])[0]
    assert torch.allclose(weights @ more, cap.retrieve(snapshots[1], rand), atol=1e-10)


def test_softmax_weights_are_a_softmax_of_scaled_key_similarities():
    keys = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    w = cap.retrieval_weights("softmax", keys, [2], beta=2.0)[0]
    # row 1: softmax(2 * [1, 0]) = [e^2, 1] / (e^2 + 1)
    assert w[0, 0].item() == pytest.approx(math.e ** 2 / (math.e ** 2 + 1))
    values = torch.tensor([[1.0, 1.0], [2.0, -1.0]], dtype=torch.float64)
    assert torch.allclose(cap.softmax_retrieve(keys, values, keys, 2.0), w @ values)


def test_worst_case_over_values_implies_the_drawn_values_are_within_eps():
    curves = cap.capacity_curves(32, 64, cap.n_grid(32), 6, _gen(4), rules=["hebbian"])
    for adversarial, within in zip(curves["hebbian"]["adversarial"], curves["hebbian"]["all_within"]):
        assert adversarial <= within


def test_capacity_estimator_and_grid():
    sizes, curve = [1, 2, 4, 8], [1.0, 0.9, 0.6, 0.2]
    t = 1 / math.sqrt(2)
    assert cap.capacity_at(sizes, curve, t) == pytest.approx(2 ** (1 + (0.9 - t) / (0.9 - 0.6)))
    assert cap.capacity_at(sizes, [1.0, 1.0, 1.0, 0.95], 0.9) is None
    assert cap.capacity_at(sizes, [0.1, 0.0, 0.0, 0.0], 0.5) == 1.0
    grid = cap.n_grid(300)
    assert grid[:8] == list(range(1, 9)) and grid[-1] == 300 and grid == sorted(set(grid))
    assert 256 in grid and 128 in grid


def test_power_law_fit_recovers_a_known_slope():
    x = [16, 32, 64, 128, 256, 512]
    fit = cap.fit_power_law(x, [3.0 * d ** 0.7 for d in x])
    assert fit["slope"] == pytest.approx(0.7, abs=1e-9) and fit["intercept"] == pytest.approx(math.log(3.0))
    assert fit["r2"] == pytest.approx(1.0) and fit["points"] == 6
    partial = cap.fit_power_law(x, [2.0 * d ** 0.5 if d < 100 else None for d in x])
    assert partial["slope"] == pytest.approx(0.5) and partial["points"] == 3
    assert cap.fit_power_law(x, [None] * 5 + [4.0])["slope"] is None


def test_capacity_scales_linearly_on_average_and_like_sqrt_in_the_worst_case():
    dims = [16, 64, 256]
    average, worst = [], []
    for d_k in dims:
        sizes = cap.n_grid(2 * d_k)
        curves = cap.capacity_curves(d_k, 64, sizes, 6, _gen(d_k), rules=["hebbian"])["hebbian"]
        average.append(cap.capacity_at(sizes, curves["mean_cos"], cap.THRESHOLDS["mean_cos"]))
        worst.append(cap.capacity_at(sizes, curves["adversarial"], cap.THRESHOLDS["adversarial"]))
    for d_k, n in zip(dims, average):      # the derivation: N* = d_k + 1
        assert n == pytest.approx(d_k + 1, rel=0.2)
    assert 0.85 < cap.fit_power_law(dims, average)["slope"] < 1.15
    assert 0.2 < cap.fit_power_law(dims, worst)["slope"] < 0.75


def test_correlated_keys_have_the_requested_pairwise_cosine():
    keys = cap.sample_keys("correlated", 200, 512, _gen(5), correlation=0.3, dtype=torch.float64)
    gram = keys @ keys.T
    off = gram[~torch.eye(200, dtype=torch.bool)]
    assert torch.allclose(keys.norm(dim=1), torch.ones(200, dtype=torch.float64))
    assert float(off.mean()) == pytest.approx(0.3, abs=0.03)


def test_lightning_state_without_decay_is_the_hebbian_memory():
    sizes = [1, 4, 16, 48]
    light = cap.lightning_state_curves(16, 24, sizes, [0.0, 0.5], 2, _gen(6))
    hebb = cap.capacity_curves(16, 24, sizes, 2, _gen(6), rules=["hebbian"])["hebbian"]
    for metric in ("mean_cos", "accuracy", "all_within", "adversarial", "mean_error"):
        assert np.allclose(light[0.0][metric], hebb[metric], atol=1e-5), metric
    # one stored pair is retrieved exactly whatever the decay; strong decay forgets most of a long stream
    assert light[0.5]["mean_cos"][0] == pytest.approx(1.0, abs=1e-6)
    assert light[0.5]["mean_cos"][-1] < 0.5 * light[0.0]["mean_cos"][-1]


def _tiny_ltm(seed: int = 0) -> LongTermMemory:
    torch.manual_seed(seed)
    return LongTermMemory(16, config=LTMConfig(depth=1, heads=2, hidden=32))


def test_ltm_probe_one_place_is_recalled_and_decoded_exactly():
    memory = _tiny_ltm()
    for query in ("network", "token"):
        curve = cap.ltm_recall_curve(memory, [1, 4], 2, seed=1, query=query)
        assert curve["recall_at_1"][0] == 1.0 and curve["recall_at_m"][0] == 1.0, query
        assert curve["decode_cos"][0] == pytest.approx(1.0, abs=1e-5), query
        assert curve["chance"] == [1.0, 0.75]


def test_ltm_recall_degrades_as_places_crowd_a_noisy_revisit():
    memory = _tiny_ltm()
    sizes = [1, 4, 16, 64]
    curve = cap.ltm_recall_curve(memory, sizes, 3, seed=2, noise=1.5, query="token")
    recall = curve["recall_at_1"]
    assert recall[0] == 1.0 and recall[-1] < 0.8
    assert all(later <= earlier + 0.15 for earlier, later in zip(recall, recall[1:]))
    assert all(0.0 <= d <= 1.0 for d in curve["distinct_top1"])


def test_ltm_place_capacity_is_unbounded_for_an_exact_ideal_query_and_bounded_by_noise():
    memory = _tiny_ltm()
    assert cap.ltm_place_capacity(memory, 64, query="token", noise=0.0) is None
    noisy = cap.ltm_place_capacity(memory, 64, query="token", noise=1.5, trials=3)
    assert noisy is not None and 1.0 <= noisy < 64


def test_bench_memory_capacity_keys():
    from vlnkit.benchmarks.memory import CAPACITY_MAX_PLACES, capacity_figures

    out = capacity_figures(Mem4NavConfig(dim=32, ltm=LTMConfig(depth=1)), seed=0)
    assert set(out) == {"ltm_capacity_places", "ltm_capacity_places_ideal_query", "ltm_capacity_max_places",
                        "hebbian_capacity_at_dim"}
    assert out["ltm_capacity_max_places"] == CAPACITY_MAX_PLACES
    for key in ("ltm_capacity_places", "ltm_capacity_places_ideal_query"):
        assert out[key] is None or 1.0 <= out[key] <= CAPACITY_MAX_PLACES
    assert out["hebbian_capacity_at_dim"] == pytest.approx(33, rel=0.25)   # d_k + 1
    assert capacity_figures(Mem4NavConfig.variant("no_ltm", dim=32)) == {}
