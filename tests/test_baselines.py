"""ParM (baselines): exact reconstruction for an additive parity, training, resuming, persistence, same draws."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from approxifer import baselines as bl
from approxifer import codec, experiments, models, train
from approxifer.experiments import ParameterError
from approxifer.serving import served
from approxifer.train import Recipe


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("APPROXIFER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("APPROXIFER_MODELS", str(tmp_path / "models"))
    monkeypatch.setenv("APPROXIFER_CHECKPOINTS", str(tmp_path / "checkpoints"))
    return tmp_path


def save_base(arch: str = "mlp", seed: int = 1) -> None:
    torch.manual_seed(seed)
    models.save(models.build(arch, "mnist"), "mnist", arch, {"note": "random weights for tests"}, half=False)


TINY = Recipe(epochs=1, batch_size=64, lr=0.05, crop_pad=0, flip=False, label_smoothing=0.0)


def test_reconstruction_is_exact_for_an_additive_parity():
    """f(x) = Ax + b and g(x) = Ax + Kb: parity - sum of the others = f(X_j), without reading f(X_j)."""
    rng = np.random.default_rng(0)
    G, K, D, C = 6, 4, 20, 10
    A, b = rng.normal(size=(C, D)), rng.normal(size=C)
    X = rng.normal(size=(G, K, D))
    f = X @ A.T + b  # (G, K, C)
    g = X.sum(axis=1) @ A.T + K * b  # the exact additive parity for the sum encoder
    for j in range(K):
        seen = f.copy()
        seen[:, j] = np.nan  # the straggler's output never arrives
        out = bl.reconstruct(g, seen, np.full(G, j))
        assert np.allclose(out, f, atol=1e-5, rtol=0)
    assert np.allclose(bl.reconstruct_all(g, f), f, atol=1e-5, rtol=0)
    assert np.array_equal(bl.reconstruct(g, f, np.full(G, K)), f)  # the parity worker straggled: exact outputs
    wrong = X.sum(axis=1) @ A.T + b  # a parity that is not additive in the bias is off by (K - 1) b
    assert np.allclose(bl.reconstruct(wrong, f, np.zeros(G, int))[:, 0] - f[:, 0], -(K - 1) * b)


def test_parity_recipe_is_the_base_recipe_in_one_cycle():
    base = train.recipe_for("cifar10", "mobilenetv2")
    assert base.restart_epochs > 0 and base.label_smoothing > 0  # the premise: a base recipe with both
    parity = bl.parity_recipe_for("cifar10", "mobilenetv2", epochs=6)
    assert parity == replace(base, epochs=6, restart_epochs=0, label_smoothing=0.0)
    assert parity.total_epochs == 6


def test_parity_training_reduces_the_loss(env):
    save_base()
    base = served("mnist", "mlp", "cpu")
    torch.manual_seed(0)
    before = bl.evaluate_parity(models.build("mlp", "mnist"), base, 2, torch.device("cpu"), n_test=200)
    model, state = bl.train_parity("mnist", "mlp", 2, recipe=TINY, device="cpu", subset=512, progress=False)
    after = bl.evaluate_parity(model, base, 2, torch.device("cpu"), n_test=200)
    assert state["step"] == 8 and len(state["losses"]) == 8
    assert after["test_mse"] < 0.5 * before["test_mse"]
    assert np.mean(state["losses"][-2:]) < 0.5 * np.mean(state["losses"][:2])
    assert state["history"][0]["test_mse"] == pytest.approx(after["test_mse"])
    assert (env / "cache" / "train").is_dir()  # targets come from the cached training-set outputs


def test_interrupted_parity_training_resumes_to_the_same_weights(env):
    save_base()
    recipe = Recipe(epochs=2, batch_size=32, lr=0.05, crop_pad=2, flip=True, label_smoothing=0.0, ckpt_every=1000)
    kw = {"recipe": recipe, "device": "cpu", "subset": 32, "progress": False}  # one step per epoch, two in all
    full, s_full = bl.train_parity("mnist", "mlp", 3, run_dir=env / "a", **kw)
    cut, s_cut = bl.train_parity("mnist", "mlp", 3, run_dir=env / "b", stop_after=1, **kw)
    assert s_cut["step"] == 1 and (env / "b" / "state.safetensors").exists()
    assert not torch.equal(cut.state_dict()["1.weight"], full.state_dict()["1.weight"])
    resumed, s_res = bl.train_parity("mnist", "mlp", 3, run_dir=env / "b", resume=True, **kw)
    assert s_res["step"] == s_full["step"] == 2
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    with pytest.raises(ValueError, match="another recipe, K"):
        bl.train_parity("mnist", "mlp", 4, run_dir=env / "b", resume=True, **kw)


def test_saved_parity_models_load_verified_and_are_tied_to_their_base(env):
    save_base()
    model, state = bl.train_parity("mnist", "mlp", 2, recipe=TINY, device="cpu", subset=64, progress=False)
    card = bl.finish_parity(model, "mnist", "mlp", 2, state, "cpu", "test")
    assert (env / "models" / "mnist-mlp-parityK2.safetensors").exists()
    assert card["K"] == 2 and card["base_sha256"] == served("mnist", "mlp", "cpu").fingerprint
    assert 0 <= card["degraded_accuracy"] <= 1 and card["test_mse"] > 0
    loaded = bl.load_parity("mnist", "mlp", 2)
    x = torch.randn(5, 1, 28, 28)
    assert torch.allclose(loaded(x), model.float()(x), atol=1e-2)  # fp16 storage at most
    for Ks in ([2], {"mnist": [2]}):  # one list for every dataset, or one per dataset
        assert bl.check_params(datasets=["mnist"], arch="mlp", Ks=Ks, device="cpu") == {"mnist": [2]}
    p = bl.served_parity("mnist", "mlp", 2, "cpu")
    out = bl.parity_outputs(p, 2, n_test=20)
    assert out.shape == (10, 10) and np.array_equal(out, bl.parity_outputs(p, 2, n_test=20))  # cached
    save_base(seed=2)  # the base model changes: the parity model is stale
    with pytest.raises(models.ModelError, match=r"trained for another.*approxifer train-parity mnist mlp 2"):
        bl.served_parity("mnist", "mlp", 2, "cpu")
    path = env / "models" / "mnist-mlp-parityK2.safetensors"
    path.write_bytes(path.read_bytes()[:-1] + b"\0")
    with pytest.raises(models.ModelError, match="sha256"):
        bl.load_parity("mnist", "mlp", 2)


def test_a_stale_parity_model_warm_starts_for_the_new_base(env):
    save_base()
    old, state = bl.train_parity("mnist", "mlp", 2, recipe=TINY, device="cpu", subset=64, progress=False)
    old_card = bl.finish_parity(old, "mnist", "mlp", 2, state, "cpu", "first")
    save_base(seed=2)  # the base model changes
    kw = {"recipe": TINY, "device": "cpu", "subset": 64, "progress": False, "warm_start": True}
    still, _ = bl.train_parity("mnist", "mlp", 2, run_dir=env / "w0", **{**kw, "recipe": replace(TINY, lr=0.0)})
    for k, v in bl.load_parity("mnist", "mlp", 2).state_dict().items():
        assert torch.equal(still.state_dict()[k], v), k  # at rate 0: the shipped parity model, not a fresh draw
    model, state = bl.train_parity("mnist", "mlp", 2, run_dir=env / "w1", **kw)
    card = bl.finish_parity(model, "mnist", "mlp", 2, state, "cpu", "again")
    assert card["base_sha256"] == served("mnist", "mlp", "cpu").fingerprint != old_card["base_sha256"]
    kept = card["warm_start"]
    assert (kept["weights_sha256"], kept["base_sha256"]) == (old_card["weights_sha256"], old_card["base_sha256"])
    assert kept["command"] == "first"
    bl.served_parity("mnist", "mlp", 2, "cpu")  # tied to the new base now
    save_base(seed=3)  # and again: the third parity card keeps the whole chain, as base cards do
    model, state = bl.train_parity("mnist", "mlp", 2, run_dir=env / "w2", **kw)
    chain = bl.finish_parity(model, "mnist", "mlp", 2, state, "cpu", "third")["warm_start"]
    assert (chain["command"], chain["warm_start"]["command"]) == ("again", "first")
    assert chain["warm_start"]["base_sha256"] == old_card["base_sha256"]
    third = bl.load_parity_card("mnist", "mlp", 2)
    totals = bl.parity_training(third)  # three runs of TINY's epochs, retargeted in the last
    assert (totals["epochs"], totals["retargeted"]) == (3 * TINY.epochs, TINY.epochs)
    runs = (third, chain, chain["warm_start"])
    assert totals["train_min"] == pytest.approx(sum(c["wall_time_s"] for c in runs) / 60)
    first = {"epochs": TINY.epochs, "train_min": old_card["wall_time_s"] / 60, "retargeted": 0}
    assert bl.parity_training(old_card) == first


def test_warm_start_without_a_shipped_parity_model_names_the_command(env):
    save_base()
    with pytest.raises(models.ModelError, match="approxifer train-parity mnist mlp 2"):
        bl.train_parity("mnist", "mlp", 2, recipe=TINY, device="cpu", subset=64, progress=False, warm_start=True)


def test_same_draws_as_approxifer_shapes_and_outputs(env):
    save_base()
    base = served("mnist", "mlp", "cpu")
    K, N, seed, draws = 3, 4, 5, 2
    wo = experiments.worker_outputs(base, K, N, seed=2, n_test=60, progress=False)
    parity = np.random.default_rng(0).normal(size=(wo.G, 10)).astype(np.float32)
    r = bl.parm_round(wo, parity, draws=draws, seed=seed)
    R = wo.G * draws
    assert r.labels.shape == (R, K) and r.straggler.shape == (R,)
    assert r.parm.shape == r.approxifer.shape == r.base.shape == (R, K, 10)
    # ApproxIFER's straggler (straggler_table's own draw) is ParM's straggler in every round
    returned = experiments.draw_returned(R, N, 1, np.random.default_rng([seed, K, N]))
    missing = np.array([np.setdiff1d(np.arange(N), ret)[0] for ret in returned])
    assert np.array_equal(r.straggler, missing) and set(missing) == set(range(N))
    table = experiments.straggler_table([wo], draws=draws, seed=seed, baselines=False)
    ours = bl.parm_table([r]).iloc[0]
    assert ours.approxifer_all == pytest.approx(table.loc[0, "accuracy"], abs=1e-12)
    assert ours.base_all == pytest.approx(table.loc[0, "base"], abs=1e-12)
    # ParM: exact outputs except the straggling base worker's query, which is parity - sum of the others
    for g in range(R):
        j = r.straggler[g]
        others = [i for i in range(K) if i != j]
        assert np.array_equal(r.parm[g, others], r.base[g, others])
        if j < K:
            assert np.allclose(r.parm[g, j], np.tile(parity, (draws, 1))[g] - r.base[g, others].sum(0))
    assert ours.n_degraded == r.degraded.sum() and 0 < ours.n_degraded < R
    assert ours.parm_lost_low <= ours.parm_lost <= ours.parm_lost_high
    ok, d = r.correct("approxifer"), np.flatnonzero(r.degraded)
    # ApproxIFER's lost query: the one the straggling worker carries most (not query j = the worker's index)
    enc = codec.encoder_matrix(K, N)
    assert np.array_equal(r.lost, np.abs(enc).argmax(axis=1)[r.straggler])
    assert ok["lost"].shape == (len(d), 1) and ok["degraded_rounds"].shape == (len(d), K)
    assert np.array_equal(ok["lost"][:, 0], ok["all"][d, r.lost[d]])
    assert np.array_equal(ok["degraded_rounds"], ok["all"][d])
    parm_ok = r.correct("parm")["lost"][:, 0]
    assert np.array_equal(parm_ok, r.correct("parm")["all"][d, r.straggler[d]])  # the reconstructed query
    assert ours.gap_lost == pytest.approx(ok["lost"].mean() - parm_ok.mean())
    assert ours.gap_lost_low <= ours.gap_lost <= ours.gap_lost_high
    parm_rounds = r.correct("parm")["degraded_rounds"]
    assert ours.gap_degraded_rounds == pytest.approx(ok["degraded_rounds"].mean() - parm_rounds.mean())
    assert ours.gap_all == pytest.approx(ok["all"].mean() - r.correct("parm")["all"].mean())
    compared = bl.comparison({"mnist": bl.parm_table([r])})
    assert set(compared["lost"].columns) >= {"ParM, reconstructed", "ApproxIFER, lost"} and len(compared["all"]) == 1
    assert len(bl.gaps({"mnist": bl.parm_table([r])})) == 1
    per_worker = bl.by_straggler([r])
    assert len(per_worker) == K + 1 and per_worker.rounds.sum() == R


def test_resnet18_parity_code_path(env):
    save_base("resnet18")
    recipe = Recipe(epochs=1, batch_size=4, lr=0.05, crop_pad=2, flip=True, label_smoothing=0.0)
    kw = {"recipe": recipe, "device": "cpu", "subset": 8, "progress": False}
    model, state = bl.train_parity("mnist", "resnet18", 2, stop_after=1, **kw)  # one step of two: no evaluation
    assert state["step"] == 1 and np.isfinite(state["losses"]).all() and state["history"] == []
    card = {"K": 2, "base_arch": "resnet18", "base_sha256": state["base_sha256"]}
    models.save(model, "mnist", "resnet18", card, half=True, variant=bl.parity_variant(2))
    p = bl.served_parity("mnist", "resnet18", 2, "cpu")
    wo = experiments.worker_outputs(served("mnist", "resnet18", "cpu"), 2, 3, n_test=4, progress=False)
    t = bl.parm_table([bl.parm_round(wo, bl.parity_outputs(p, 2, n_test=4))])
    assert t.loc[0, "rounds"] == 2 and np.isfinite(t.loc[0, "parm_all"])


def test_bad_parameters_say_what_is_wrong(env):
    with pytest.raises(ParameterError, match="K >= 2"):
        bl.train_parity("mnist", "mlp", 1)
    with pytest.raises(ParameterError, match="unknown dataset"):
        bl.load_parity_card("svhn", "mlp", 2)
    with pytest.raises(ParameterError, match="unknown architecture"):
        bl.load_parity("mnist", "vgg", 2)
    with pytest.raises(models.ModelError, match="approxifer train-parity mnist mlp 3"):
        bl.load_parity("mnist", "mlp", 3)
    with pytest.raises(models.ModelError, match="approxifer train mnist mlp"):  # no base model to train against
        bl.train_parity("mnist", "mlp", 2, device="cpu")
    with pytest.raises(ParameterError, match="Ks must be"):
        bl.check_params(datasets=["mnist"], arch="mlp", Ks=4)
    with pytest.raises(ParameterError, match="K >= 2"):
        bl.check_params(datasets=["mnist"], arch="mlp", Ks=[1])
    with pytest.raises(ParameterError, match="unknown dataset"):
        bl.check_params(datasets=["svhn"], arch="mlp", Ks=[2])
    with pytest.raises(ParameterError, match="its keys must be the datasets"):
        bl.check_params(datasets=["mnist"], arch="mlp", Ks={"cifar10": [2]})
    with pytest.raises(ParameterError, match="Ks must be"):
        bl.check_params(datasets=["mnist"], arch="mlp", Ks={"mnist": 2})
    save_base()
    with pytest.raises(models.ModelError, match="approxifer train-parity mnist mlp 2"):
        bl.check_params(datasets=["mnist"], arch="mlp", Ks=[2], device="cpu")
    wo = experiments.worker_outputs(served("mnist", "mlp", "cpu"), 2, 4, n_test=8, progress=False)
    with pytest.raises(ParameterError, match="N = K \\+ 1"):
        bl.parm_round(wo, np.zeros((wo.G, 10)))
    with pytest.raises(ParameterError, match="straggler indices"):
        bl.reconstruct(np.zeros((1, 10)), np.zeros((1, 2, 10)), np.array([3]))
