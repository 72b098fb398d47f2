"""Private-ApproxIFER in the experiments: accuracy under noise, the audit on neighbouring rounds, what workers see."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from approxifer import codec, experiments, privacy
from approxifer import private_serving as ps
from approxifer.experiments import ParameterError, WorkerOutputs
from approxifer.serving import ServedModel


def synthetic(K: int = 4, N: int = 6, G: int = 60, C: int = 5, seed: int = 0) -> WorkerOutputs:
    """Confident base logits; worker outputs = the encoded logits plus a little model error."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, C, (G, K))
    base = rng.normal(0, 1, (G, K, C)) + 4 * np.eye(C)[labels]
    coded = codec.encode(base, N, axis=1) + rng.normal(0, 0.3, (G, N, C))
    return WorkerOutputs(K, N, np.arange(G * K).reshape(G, K), labels, base.astype(np.float32), coded)


EPS = [0.1, 1.0, 10.0, math.inf]


# ---------------------------------------------------------------- accuracy under noise


def test_infinite_epsilon_is_the_noiseless_straggler_table():
    wo = synthetic()
    S = wo.N - wo.K
    ours = ps.private_accuracy(wo, [math.inf, 1e6], S=S, seed=3)
    ref = experiments.straggler_table([wo], seed=3, kind="probs", baselines=False)
    for row in ours.itertuples():
        assert row.accuracy == ref.loc[0, "accuracy"]
        assert (row.ci_low, row.ci_high) == (ref.loc[0, "ci_low"], ref.loc[0, "ci_high"])
        assert row.base == ref.loc[0, "base"]
    assert ours.loc[0, "laplace_scale"] == 0 and ours.loc[0, "epsilon_total"] == math.inf
    twice = ps.private_accuracy(wo, [math.inf], S=S, seed=3, draws=2)
    ref_twice = experiments.straggler_table([wo], draws=2, seed=3, kind="probs", baselines=False)
    assert twice.loc[0, "accuracy"] == ref_twice.loc[0, "accuracy"]


def test_clipped_release_without_binding_clip_decodes_the_logits():
    wo = synthetic()
    ours = ps.private_accuracy(wo, [math.inf], release="clipped", clip=1e6, S=wo.N - wo.K, seed=1)
    ref = experiments.straggler_table([wo], seed=1, kind="logits", baselines=False)
    assert ours.loc[0, "accuracy"] == ref.loc[0, "accuracy"]


def test_table_columns_and_accounting():
    wo = synthetic(K=4, N=6, C=5)
    df = ps.private_accuracy(wo, EPS, S=1, seed=0)
    assert len(df) == len(EPS) and list(df["epsilon_worker"]) == EPS
    finite = df[np.isfinite(df["epsilon_worker"])]
    assert np.allclose(finite["epsilon_total"], 6 * finite["epsilon_worker"])
    assert np.allclose(finite["epsilon_base"], finite["epsilon_worker"])
    assert np.allclose(finite["laplace_scale"], 2 / finite["epsilon_worker"])
    assert (df["rounds"] == wo.G).all() and (df["queries"] == wo.G * wo.K).all()
    assert ((df["ci_low"] <= df["accuracy"]) & (df["accuracy"] <= df["ci_high"])).all()
    clipped = ps.private_accuracy(wo, [2.0], release="clipped", clip=3.0, S=1)
    assert clipped.loc[0, "laplace_scale"] == pytest.approx(2 * 3.0 * 5 / 2.0)


def test_noise_costs_accuracy_down_to_chance():
    wo = synthetic(G=200)
    df = ps.private_accuracy(wo, [0.01, math.inf], S=1)
    assert df.loc[1, "accuracy"] > 0.9 and df.loc[1, "base"] > 0.9
    assert df.loc[0, "accuracy"] < 0.35 and df.loc[0, "base"] < 0.35  # chance is 1/5


def test_seeded_and_reproducible():
    wo = synthetic()
    a = ps.private_accuracy(wo, [1.0, 3.0], seed=7)
    b = ps.private_accuracy(wo, [1.0, 3.0], seed=7)
    pd.testing.assert_frame_equal(a, b)
    c = ps.private_accuracy(wo, [1.0, 3.0], seed=8)
    assert not a[["accuracy", "base"]].equals(c[["accuracy", "base"]])


def test_noise_is_the_grid_laplace_mechanism_of_the_release():
    scores = np.zeros((20_000, 10))
    r = ps.released(scores, "probs")
    y = ps.noisy_release(scores, 0.5, "probs", rng=np.random.default_rng(0))
    np.testing.assert_array_equal(y, privacy.laplace_mechanism(r, 0.5, 2.0, rng=np.random.default_rng(0)))
    grid = privacy.laplace_grid(0.5, 2.0, 10)
    assert np.all(np.ldexp(y, -grid.k) == np.round(np.ldexp(y, -grid.k)))  # every value on the grid
    assert np.mean(np.abs(y - r)) == pytest.approx(grid.scale, rel=0.01)  # E|L| = b = 2 / 0.5
    assert np.array_equal(ps.noisy_release(scores, math.inf, "probs", rng=0), r)


def test_sensitivities():
    assert ps.release_sensitivity("probs", 10) == 2.0
    assert ps.release_sensitivity("clipped", 10, clip=2.5) == 50.0
    assert ps.release_l2_sensitivity("probs", 10) == pytest.approx(math.sqrt(2))
    assert ps.release_l2_sensitivity("clipped", 4, clip=1.0) == pytest.approx(4.0)
    x = np.random.default_rng(0).normal(0, 20, (1000, 10))
    assert np.abs(ps.released(x, "clipped", clip=2.5)).max() <= 2.5
    assert np.allclose(ps.released(x, "probs").sum(-1), 1)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"epsilons": []},
        {"epsilons": [0.0]},
        {"epsilons": [-1.0]},
        {"epsilons": [math.nan]},
        {"epsilons": [True]},
        {"epsilons": "1"},
        {"epsilons": [1.0], "release": "logits"},
        {"epsilons": [1.0], "release": "clipped"},
        {"epsilons": [1.0], "release": "clipped", "clip": -1.0},
        {"epsilons": [1.0], "S": 6},
        {"epsilons": [1.0], "draws": 0},
        {"epsilons": [1.0], "seed": -1},
    ],
)
def test_bad_parameters_raise(kwargs):
    with pytest.raises(ParameterError):
        ps.private_accuracy(synthetic(G=4), **kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"epsilons": [1], "release": "probs", "clip": 0},
        {"epsilons": [1], "release": "probs", "clip": None, "audit_epsilon": math.inf},
        {"epsilons": [1], "release": "probs", "clip": None, "audit_samples": 10},
        {"epsilons": [], "release": "probs", "clip": None},
    ],
)
def test_check_private_params(kwargs):
    ps.check_private_params(epsilons=[0.1, 1], release="probs", clip=5.0)
    with pytest.raises(ParameterError):
        ps.check_private_params(**kwargs)


# ---------------------------------------------------------------- where accuracy comes back


def test_first_within_is_from_which_on_every_point_stays_within():
    eps = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    drops = np.array([[0.5, 0.005, 0.02, 0.0, 0.001], [0.5, 0.4, 0.3, 0.2, 0.1], [0.0, 0.0, 0.0, 0.0, 0.0]])
    np.testing.assert_array_equal(ps._first_within(drops, eps, 0.01), [4.0, math.inf, 1.0])  # not 2: 3 fails


def test_noise_threshold_on_synthetic_rounds():
    wo = synthetic(G=150)
    grid = [0.3, 1.0, 3.0, 10.0, 30.0, 1e3, 1e5]
    table, summary = ps.noise_threshold(wo, [*grid, math.inf], S=1, seed=0, n_boot=500)
    assert list(table["epsilon_worker"]) == grid and np.allclose(table["epsilon_total"], 6 * table["epsilon_worker"])
    assert table.loc[0, "drop"] > 0.3 and abs(table.iloc[-1]["drop"]) < 0.01  # chance at 0.3, none at 1e5
    assert (table["within"] == (table["drop"] <= 0.01)).all()
    assert ((table["drop_low"] <= table["drop"]) & (table["drop"] <= table["drop_high"])).all()
    for p in ("", "base_"):
        assert summary[f"{p}eps"] in grid and summary[f"{p}lo"] <= summary[f"{p}eps"] <= summary[f"{p}hi"]
        assert {summary[f"{p}lo"], summary[f"{p}hi"]} <= set(grid) | {math.inf}
        expected = ps._first_within(table[f"{p}drop"].to_numpy(), np.array(grid), 0.01)
        assert summary[f"{p}eps"] == expected
    accuracy = ps.private_accuracy(wo, [math.inf, *grid], S=1, seed=0).set_index("epsilon_worker")
    drops = accuracy.loc[math.inf, "accuracy"] - accuracy.loc[grid, "accuracy"].to_numpy()
    np.testing.assert_allclose(table["drop"], drops, atol=1e-12)  # the same draws as private_accuracy
    again, summary_again = ps.noise_threshold(wo, grid, S=1, seed=0, n_boot=500)
    pd.testing.assert_frame_equal(table, again)
    assert summary == summary_again


def test_noise_threshold_with_draws_and_bad_parameters():
    wo = synthetic(G=40)
    table, _ = ps.noise_threshold(wo, [1.0, 10.0, 1e4], S=1, draws=3, n_boot=300)
    accuracy = ps.private_accuracy(wo, [math.inf, 1.0, 10.0, 1e4], S=1, draws=3)["accuracy"].to_numpy()
    np.testing.assert_allclose(table["drop"], accuracy[0] - accuracy[1:], atol=1e-12)
    for kwargs in ({"epsilons": [math.inf]}, {"epsilons": [1.0], "tol": 0}, {"epsilons": [1.0], "n_boot": 5}):
        with pytest.raises(ParameterError):
            ps.noise_threshold(wo, **kwargs)


# ---------------------------------------------------------------- audit


def flipped_pair(K: int = 3, N: int = 5, C: int = 4, flips: int = 3) -> ps.NeighbouringRounds:
    """`flips` workers move their whole probability mass from class 0 to class 1: ℓ1 distance 2 each."""
    a = np.full((N, C), 1.0 / C)
    b = a.copy()
    a[:flips] = np.eye(C)[0]
    b[:flips] = np.eye(C)[1]
    l1 = np.abs(a - b).sum(-1)
    return ps.NeighbouringRounds(K, N, "probs", None, 2.0, np.arange(K), 0, 0, K, a, b, l1)


def test_audit_finds_the_composition_and_the_l2_miscalibration():
    pair = flipped_pair()
    table = ps.audit_table(pair, 1.0, n_samples=40_000, seed=0)
    assert list(table["passed"]) == [True, True, False, False]
    assert table.loc[1, "true loss bound"] == pytest.approx(3.0)
    assert table.loc[2, "epsilon_lower"] > 1.0  # all N releases: more than one worker's epsilon
    assert table.loc[3, "epsilon_lower"] > 1.0  # l2 noise is too small
    assert (table["epsilon_lower"] <= table["true loss bound"] + 1e-9).all()


def test_audit_rejects_bad_workers():
    with pytest.raises(ParameterError):
        ps.audit_release(flipped_pair(), 1.0, 1.0, workers=[0, 0], n_samples=100, rng=0)
    with pytest.raises(ParameterError):
        ps.audit_release(flipped_pair(), 1.0, 1.0, workers=[9], n_samples=100, rng=0)


def linear_model(C: int = 10) -> ServedModel:
    w = torch.from_numpy(np.random.default_rng(0).normal(0, 0.05, (28 * 28, C))).float()
    return ServedModel("lin", "mnist", "lin", lambda x: (x.flatten(1) @ w).numpy())


def test_neighbouring_rounds_differ_in_one_query():
    model = linear_model()
    pair = ps.neighbouring_rounds(model, 4, 5, candidates=3, seed=2)
    groups = experiments.test_groups("mnist", 4, seed=2, n_test=8)
    assert np.array_equal(pair.queries, groups[0])
    assert pair.query == groups[0][pair.position] and pair.replacement in groups[1][:3]
    from approxifer import data

    x, _ = data.load("mnist", "test")
    d, d2 = groups[0].copy(), groups[0].copy()
    d2[pair.position] = pair.replacement
    for q, rel in ((d, pair.a), (d2, pair.b)):
        out = model.predict(codec.encode(data.to_tensor(x[q], "mnist"), 5))
        assert np.allclose(rel, privacy.softmax(out), atol=1e-6)
    assert np.allclose(pair.l1, np.abs(pair.a - pair.b).sum(-1))
    assert (pair.l1 > 0).all()  # the changed query reaches every worker (K=4, N=5: no one-hot row)


# ---------------------------------------------------------------- what a worker sees


def images(K: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (K, 28, 28, 1), dtype=np.uint8)


def test_ssim():
    rng = np.random.default_rng(0)
    x, y = rng.random((28, 28)), rng.random((28, 28))
    assert ps.ssim(x, x) == pytest.approx(1.0)
    assert ps.ssim(x, y) == pytest.approx(ps.ssim(y, x))
    assert ps.ssim(x, y) < 0.2
    assert ps.ssim(x[..., None].repeat(3, -1), x[..., None].repeat(3, -1)) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        ps.ssim(x, y[:10])


def test_coded_queries_are_the_encoder_applied_to_pixels():
    X = images(4)
    coded = ps.coded_queries(X, "mnist", 6)
    assert coded.shape == (6, 28, 28, 1)
    assert np.allclose(coded, codec.encode(X / 255.0, 6))  # the weights sum to one: normalising commutes
    with pytest.raises(ValueError):
        ps.coded_queries(X.astype(np.float32), "mnist", 6)


def test_reveal_one_hot_rows_when_N_is_2K():
    K = 4
    table = ps.reveal(images(K), "mnist", 2 * K)
    one_hot = np.isclose(table["max |weight|"], 1.0)
    assert one_hot.sum() == K  # every odd worker gets a query in the clear
    assert np.allclose(table.loc[one_hot, ["pearson", "ssim"]], 1.0)
    assert np.allclose(table.loc[one_hot, "relative L2"], 0.0)
    assert not privacy.queries_reach_all_workers(K, 2 * K)


def test_any_K_workers_reconstruct_every_query():
    K, N = 4, 6
    X = images(K)
    coded = ps.coded_queries(X, "mnist", N)
    for workers in ([0, 1, 2, 3], [1, 3, 4, 5]):
        assert np.allclose(ps.reconstruct(coded[workers], workers, K, N), X / 255.0, atol=1e-9)
    with pytest.raises(ParameterError):
        ps.reconstruct(coded[:3], [0, 1, 2], K, N)


def test_one_hot_workers():
    assert ps.one_hot_workers(8, 9) == []
    assert ps.one_hot_workers(4, 8) == [1, 3, 5, 7]
    assert ps.one_hot_workers(3, 6) == [1, 3, 5]


# ---------------------------------------------------------------- the notebook's tables, figures and glue


def test_accuracy_glue_and_table_use_the_books_names():
    wo = synthetic()
    results = {"mnist": ps.private_accuracy(wo, [0.1, 10.0, math.inf]), "fashion-mnist": ps.private_accuracy(wo, [1.0])}
    glue = ps.accuracy_glue(results)
    for name in ("mnist_e0p1_acc", "mnist_e10_total", "mnist_noiseless_base", "fashionmnist_e1_hi"):
        assert name in glue
    assert glue["mnist_e10_total"] == 60.0 and glue["mnist_e10_acc"] == results["mnist"].loc[1, "accuracy"]
    table = ps.accuracy_table(results)
    assert table.index.names == ["dataset", "ε per worker"] and ("MNIST", "no noise") in table.index
    assert table.loc[("MNIST", "no noise"), "ε per query"] == "–"
    assert not table.map(lambda v: "nan" in str(v).lower() or v in ("True", "False")).any().any()


def test_threshold_glue_and_summary():
    wo = synthetic(G=80)
    thresholds = {"cifar10": ps.noise_threshold(wo, [1.0, 10.0, 1e4], n_boot=200)}
    _, s = thresholds["cifar10"]
    glue = ps.threshold_glue(thresholds, 6)
    assert glue["cifar10_within1_eps"] == s["eps"] and glue["cifar10_within1_total"] == 6 * s["eps"]
    assert {"cifar10_within1_lo", "cifar10_within1_hi", "cifar10_base_within1_eps"} <= set(glue)
    summary = ps.threshold_summary(thresholds, 6)
    assert summary.loc["CIFAR-10", "ApproxIFER: ε per worker"] == f"{s['eps']:g} [{s['lo']:g}, {s['hi']:g}]"
    assert ps._eps_ci(math.inf, 30.0, math.inf, 50.0) == "> 50 [30, > 50]"
    assert set(ps.threshold_table(thresholds).iloc[:, 1]) <= {"✓", "✗"}


def test_number_formats():
    assert ps._num(2.42e46) == "2.4 × 10⁴⁶" and ps._num(29.94) == "29.9" and ps._num(math.nan) == "–"
    table = ps.budget_table([1.0, 800.0], 9)
    assert table.loc["800", "ε per query (advanced, δ = 1e-05)"] == "overflows"
    assert ps.glue_key("fashion-mnist", 0.3) == "fashionmnist_e0p3" and ps.glue_key("mnist", math.inf).endswith(
        "noiseless"
    )


def test_attack_table_counts_the_textbook_sampler_only():
    table, glue = ps.attack_table(n_samples=300, seed=0)
    assert glue["attack_grid_unit"] == glue["attack_grid_softmax"] == 0.0
    assert glue["attack_textbook_unit"] > 0.5 and glue["attack_textbook_softmax"] > 0.5
    assert list(table.columns) == ["textbook sampler (numpy)", "grid release (here)"]


def test_audit_display_and_glue():
    audits = {"mnist": ps.audit_table(flipped_pair(), 1.0, n_samples=5000, seed=0)}
    shown = ps.audit_display(audits)
    assert shown.index.names == ["dataset", "released by"]
    assert list(shown[""]) == ["✓", "✓", "✗", "✗"]
    assert list(shown["noise for"]) == ["ℓ1", "ℓ1", "ℓ1", "ℓ2 ([R])"]
    glue = ps.audit_glue(audits)
    assert glue["mnist_audit2_verdict"] in ("passed", "failed") and "mnist_audit3_bound" in glue


def test_figures_fit_the_column_with_legends_outside_the_data():
    import matplotlib.pyplot as plt

    wo = synthetic()
    results = {"mnist": ps.private_accuracy(wo, [0.3, 3.0, 30.0, math.inf])}
    thresholds = {"mnist": ps.noise_threshold(wo, [10.0, 20.0, 30.0], n_boot=200)}
    for fig in (ps.accuracy_figure(results), ps.threshold_figure(thresholds)):
        assert fig.get_figwidth() <= 7.5 and len(fig.axes) <= 2
        fig.canvas.draw()
        legend = fig.legends[0].get_window_extent()
        assert all(not legend.overlaps(ax.get_window_extent()) for ax in fig.axes)
        plt.close(fig)
