"""The ICL-regression experiment (vlnkit/eval/experiments/icl_regression.py): the estimators and circuit
extractors against hand computations and closed forms, and the run end to end with its resume."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from vlnkit.eval.experiments import icl_regression as icl
from vlnkit.eval.experiments.runner import run_experiment

torch.set_num_threads(1)


def hand_built(d: int, omega: list[float], mu: list[float]) -> icl.MultiHeadAttentionICL:
    """A float64 model with x-x block of K^T Q = omega_h sqrt(d+1) I (other blocks 0) and O V = mu_h e_{d+1}^T."""
    heads, size = len(omega), d + 1
    model = icl.MultiHeadAttentionICL(d, heads).double()
    with torch.no_grad():
        model.K.copy_(torch.eye(size, dtype=torch.float64).expand(heads, size, size))
        model.V.copy_(torch.eye(size, dtype=torch.float64).expand(heads, size, size))
        for h in range(heads):
            model.Q[h] = torch.diag(torch.tensor([omega[h] * math.sqrt(size)] * d + [0.0], dtype=torch.float64))
            model.O[h] = 0.0
            model.O[h, 0, d] = mu[h]
    return model


def prompts(d: int = 3, length: int = 12, batch: int = 64, seed: int = 0):
    return icl.sample_prompts(batch, length, d, 0.1, torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_zero_sum_heads_remove_a_constant_shift_of_the_labels_exactly():
    x, y, x_q, _ = prompts()
    pair = hand_built(3, [0.4, -0.3], [0.7, -0.7])
    single = hand_built(3, [0.4], [0.7])
    with torch.no_grad():
        for c in (2.5, -11.0):
            assert torch.allclose(pair(x, y + c, x_q), pair(x, y, x_q), rtol=0, atol=1e-12)
            assert torch.allclose(single(x, y + c, x_q) - single(x, y, x_q),
                                  torch.full((len(x),), 0.7 * c, dtype=torch.float64), rtol=0, atol=1e-12)
            omega, mu = torch.tensor([0.4, -0.3], dtype=torch.float64), torch.tensor([0.7, -0.7], dtype=torch.float64)
            assert torch.allclose(icl.reduced_predictor(x, y + c, x_q, omega, mu),
                                  icl.reduced_predictor(x, y, x_q, omega, mu), rtol=0, atol=1e-12)
        # the hand-built model is the reduced predictor, and the shift is not vacuous (it moves ybar a lot)
        assert torch.allclose(pair(x, y, x_q), icl.reduced_predictor(x, y, x_q, omega, mu), atol=1e-12)
        assert (single(x, y + 2.5, x_q) - single(x, y, x_q)).abs().min() > 1.0


def test_small_omega_pair_matches_debiased_gd_to_second_order():
    x, y, x_q, _ = prompts(d=3, length=24, batch=256)
    mu = torch.tensor([1.3, -1.3], dtype=torch.float64)
    errors = {}
    for w in (1e-2, 1e-3):
        omega = torch.tensor([w, -w], dtype=torch.float64)
        reduced = icl.reduced_predictor(x, y, x_q, omega, mu)
        dgd = icl.dgd_predictor(x, y, x_q, 2 * w * 1.3)
        errors[w] = float((reduced - dgd).norm() / dgd.norm())
    assert errors[1e-3] < 50 * 1e-3 ** 2
    assert 30 < errors[1e-2] / errors[1e-3] < 300   # shrinks like omega^2


def test_small_omega_expansion_keeps_the_bias_of_unpaired_heads():
    x, y, x_q, _ = prompts()
    mu = torch.tensor([0.9, -0.2, 0.4], dtype=torch.float64)
    gaps = []
    for w in (1e-2, 1e-3):
        omega = torch.tensor([w, -2 * w, 0.5 * w], dtype=torch.float64)
        gaps.append(float((icl.small_omega_predictor(x, y, x_q, omega, mu)
                           - icl.reduced_predictor(x, y, x_q, omega, mu)).abs().max()))
    assert gaps[1] < 1e-4 and 30 < gaps[0] / gaps[1] < 300   # first-order expansion: O(omega^2) residual
    # omega = 0: every head averages the labels, so the prediction is sum(mu) * ybar
    zero = torch.zeros(3, dtype=torch.float64)
    assert torch.allclose(icl.reduced_predictor(x, y, x_q, zero, mu), 1.1 * y.mean(dim=1), atol=1e-12)


def test_dgd_closed_form_on_hand_examples():
    # d=1, L=2: x=(1,3), y=(2,4), x_q=2, eta=0.5: xbar=2, ybar=3, sum (y-ybar)(x-xbar) = 2, so 0.5/2 * 2 * 2 = 1
    x = torch.tensor([[[1.0], [3.0]]], dtype=torch.float64)
    out = icl.dgd_predictor(x, torch.tensor([[2.0, 4.0]], dtype=torch.float64),
                            torch.tensor([[2.0]], dtype=torch.float64), 0.5)
    assert float(out) == pytest.approx(1.0, abs=1e-12)
    # d=2, L=3: xbar=(1,1), ybar=3, sum (y-ybar)(x-xbar) = (4,5), dot x_q=(1,-1) gives -1, eta/L = 1
    x = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]]], dtype=torch.float64)
    out = icl.dgd_predictor(x, torch.tensor([[1.0, 2.0, 6.0]], dtype=torch.float64),
                            torch.tensor([[1.0, -1.0]], dtype=torch.float64), 3.0)
    assert float(out) == pytest.approx(-1.0, abs=1e-12)


def test_query_does_not_attend_to_itself():
    # d=1, context x=(1,0), y=(4,8), query x_q=1, omega=ln 3, mu=2: weights (3/4, 1/4) give 2*(3+2) = 10.
    # Were the query (1, 0) a key too, the weights would be (3/7, 1/7, 3/7) and the answer 2*20/7.
    x = torch.tensor([[[1.0], [0.0]]], dtype=torch.float64)
    y = torch.tensor([[4.0, 8.0]], dtype=torch.float64)
    x_q = torch.tensor([[1.0]], dtype=torch.float64)
    model = hand_built(1, [math.log(3.0)], [2.0])
    with torch.no_grad():
        assert float(model(x, y, x_q)) == pytest.approx(10.0, abs=1e-12)
    omega, mu = torch.tensor([math.log(3.0)], dtype=torch.float64), torch.tensor([2.0], dtype=torch.float64)
    assert float(icl.reduced_predictor(x, y, x_q, omega, mu)) == pytest.approx(10.0, abs=1e-12)


def test_ridge_matches_numpy_closed_form_and_least_squares():
    x, y, x_q, _ = prompts(d=4, length=10, batch=5, seed=3)
    lam = 0.4
    ours = icl.ridge_predictor(x, y, x_q, lam).numpy()
    xs, ys, qs = x.numpy(), y.numpy(), x_q.numpy()
    for b in range(5):
        beta = np.linalg.solve(xs[b].T @ xs[b] + lam * np.eye(4), xs[b].T @ ys[b])
        assert ours[b] == pytest.approx(float(beta @ qs[b]), abs=1e-10)
    plain = icl.ridge_predictor(x, y, x_q, 0.0).numpy()
    for b in range(5):
        beta = np.linalg.lstsq(xs[b], ys[b], rcond=None)[0]
        assert plain[b] == pytest.approx(float(beta @ qs[b]), abs=1e-9)
    assert np.abs(plain - ours).max() > 1e-3   # the penalty changes the answer


def test_mu_star_minimises_the_reduced_population_loss():
    omega = torch.tensor([0.3, -0.25, 0.1], dtype=torch.float64)
    d, length, sigma2 = 5, 40, 0.1
    best = icl.mu_star(omega, d, length, sigma2)

    def loss(mu: torch.Tensor) -> float:
        return float(icl.reduced_population_loss(mu, omega, d, length, sigma2))

    def fd_grad(mu: torch.Tensor, h: float = 1e-6) -> torch.Tensor:
        eye = torch.eye(3, dtype=torch.float64)
        return torch.tensor([(loss(mu + h * eye[i]) - loss(mu - h * eye[i])) / (2 * h) for i in range(3)])

    assert fd_grad(best).abs().max() < 1e-7
    assert fd_grad(best + 0.3).abs().max() > 1e-2   # the check can fail away from the optimum
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        step = torch.randn(3, generator=gen, dtype=torch.float64) * 0.05
        assert loss(best + step) > loss(best)
    # two heads with the same omega: the loss is flat along mu_1 - mu_2; the least-norm answer splits evenly
    twin = torch.tensor([0.2, 0.2, -0.2], dtype=torch.float64)
    split = icl.mu_star(twin, d, length, sigma2)
    assert float(split[0]) == pytest.approx(float(split[1]), rel=1e-6) and float(split[0]) * float(split[2]) < 0
    # mu = 0 predicts nothing: the loss is E[y_q^2] = |beta|^2 + sigma^2 = 1 + sigma^2 on average
    assert loss(torch.zeros(3, dtype=torch.float64)) == pytest.approx(1 + sigma2)


def test_extractors_read_hand_built_circuits_and_roles():
    model = hand_built(3, [0.2, -0.21, 0.05, 0.15], [1.0, -0.95, 0.01, 0.6]).float()
    c = icl.extract_heads(model)
    assert torch.allclose(c["omega"], torch.tensor([0.2, -0.21, 0.05, 0.15]), atol=1e-6)
    assert torch.allclose(c["omega_raw"], torch.tensor([0.2, -0.21, 0.05, 0.15]) * 2.0, atol=1e-6)
    assert torch.allclose(c["mu"], torch.tensor([1.0, -0.95, 0.01, 0.6]), atol=1e-6)
    assert c["offdiag_ratio"].abs().max() < 1e-6 and torch.allclose(c["ov_last_share"], torch.ones(4))
    roles = icl.head_roles(c["omega"], c["mu"], dummy_tol=0.1, pair_tol=0.25)
    assert roles == ["pair 1", "pair 1", "dummy", "active"]
    assert icl.zero_sum_ratio(c["mu"]) == pytest.approx(0.66 / 2.56, rel=1e-5)


TINY = ["heads=[2]", "d=3", "length=12", "steps=300", "batch=128", "lr=1e-2", "checkpoint_every=100", "log_every=50",
        "test_lengths=[12,24]", "test_samples=1000", "progress=false"]


def results_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def test_run_end_to_end_and_resume(tmp_path, monkeypatch):
    first = run_experiment("icl_regression", [*TINY, f"out={tmp_path / 'a'}"])
    data = results_of(first)
    titles = [t["title"] for t in data["tables"]]
    assert titles == ["Fitted heads", "Emergent structure per head count", "Test MSE vs prompt length"]
    assert {p for p in data["plots"]} == {"mse_vs_length.png", "circuits.png"}
    assert all((first / p).is_file() for p in data["plots"])
    mse = data["results"]["test_mse"]
    # the zero predictor's expected MSE is E[y^2] = 1 + sigma^2 = 1.1; a trained 2-head model does much better
    assert mse["softmax attention H=2"]["12"] < 0.8 * 1.1
    assert mse["ridge lambda=sigma^2 d=0.3 (Bayes)"]["12"] < mse["softmax attention H=2"]["12"]
    fitted_rows = [r for r in data["tables"][0]["rows"] if r[0] == 2]
    assert len(fitted_rows) == 2

    # interrupt the second run in the 2-head model's training (steps 301-600 overall: h1 first, then h2)
    calls = {"n": 0}

    def interrupt(optimizer, args, kwargs):
        calls["n"] += 1
        if calls["n"] > 450:
            raise KeyboardInterrupt

    handle = register_optimizer_step_pre_hook(interrupt)
    try:
        with pytest.raises(KeyboardInterrupt):
            run_experiment("icl_regression", [*TINY, f"out={tmp_path / 'b'}"])
    finally:
        handle.remove()
    assert not (tmp_path / "b" / "results.json").exists()

    calls["n"] = 0
    handle = register_optimizer_step_pre_hook(lambda *a: calls.__setitem__("n", calls["n"] + 1))
    try:
        second = run_experiment("icl_regression", [*TINY, f"out={tmp_path / 'b'}"])
    finally:
        handle.remove()
    # h1 finished (not retrained), h2 resumes from its step-100 checkpoint (200 left), linear attention 300
    assert calls["n"] == 200 + 300
    assert results_of(second)["results"] == data["results"]

    # a folder whose models are all finished: no training step at all, the same numbers
    (second / "results.json").unlink()

    def forbid(optimizer, args, kwargs):
        raise AssertionError("a finished model was trained again")

    handle = register_optimizer_step_pre_hook(forbid)
    try:
        third = run_experiment("icl_regression", [*TINY, f"out={tmp_path / 'b'}"])
    finally:
        handle.remove()
    assert results_of(third)["results"] == data["results"]
