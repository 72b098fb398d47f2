"""The experiment engine against direct loops, its cache, and the affine-model identity."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from approxifer import codec, data, experiments, inference, models
from approxifer.experiments import ParameterError
from approxifer.serving import ServedModel, served, torch_predictor


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("APPROXIFER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("APPROXIFER_MODELS", str(tmp_path / "models"))
    return tmp_path


def tiny_mlp(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return models.build("mlp", "mnist")


def save_tiny(seed: int) -> None:
    models.save(tiny_mlp(seed), "mnist", "mlp", {"note": "random weights for tests"}, half=False)


def test_engine_equals_a_direct_loop(env):
    save_tiny(0)
    model = served("mnist", "mlp", device="cpu")
    wo = experiments.worker_outputs(model, 4, 6, n_test=40, seed=3, progress=False)
    table = experiments.straggler_table([wo], seed=5, baselines=False)
    # the same rounds, one at a time
    x, y = data.load("mnist", "test")
    groups = experiments.test_groups("mnist", 4, seed=3, n_test=40)
    returned = experiments.draw_returned(len(groups), 6, 2, np.random.default_rng([5, 4, 6]))
    correct = []
    for g, ret in zip(groups, returned, strict=True):
        Y = model.predict(codec.encode(data.to_tensor(x[g], "mnist"), 6))
        correct.append(codec.decode(Y[ret].astype(np.float64), ret, 4, 6).argmax(-1) == y[g])
    assert table.loc[0, "accuracy"] == pytest.approx(np.mean(correct), abs=1e-12)
    assert table.loc[0, "base"] == pytest.approx(
        np.mean(model.predict(data.to_tensor(x[groups.ravel()], "mnist")).argmax(-1) == y[groups.ravel()])
    )


def test_cache_hits_are_identical_and_a_changed_model_invalidates(env):
    save_tiny(0)
    a = experiments.worker_outputs(served("mnist", "mlp", "cpu"), 4, 5, n_test=24, progress=False)
    files = sorted((env / "cache" / "coded").iterdir())
    assert len(files) == 1
    mtime = files[0].stat().st_mtime_ns
    calls = []
    m = served("mnist", "mlp", "cpu")
    spy = ServedModel(m.name, m.dataset, m.fingerprint, lambda x: calls.append(len(x)) or m.predict(x))
    b = experiments.worker_outputs(spy, 4, 5, n_test=24, progress=False)
    assert calls == [] and files[0].stat().st_mtime_ns == mtime
    assert np.array_equal(a.coded, b.coded) and np.array_equal(a.base, b.base)
    save_tiny(1)  # the model file changes: new sha256, new cache entries
    c = experiments.worker_outputs(served("mnist", "mlp", "cpu"), 4, 5, n_test=24, progress=False)
    assert len(list((env / "cache" / "coded").iterdir())) == 2
    assert not np.allclose(a.coded, c.coded)


def test_affine_model_decodes_to_the_round_trip_matrix_of_its_true_outputs(env):
    """For f(x) = Ax + b, decode(f(encode(X))) = D E f(X) exactly, since Berrut weights sum to one."""
    torch.manual_seed(0)
    lin = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10)).double()
    predict = lambda x: lin(x.double()).detach().numpy()  # noqa: E731
    model = ServedModel("mnist-linear", "mnist", "linear-0", predict)
    K, N = 5, 7
    wo = experiments.worker_outputs(model, K, N, n_test=50, progress=False)
    returned = np.array([0, 2, 3, 5, 6])
    decoded = experiments.decode_groups(wo.coded, np.tile(returned, (wo.G, 1)), K, N)
    round_trip = codec.decoder_matrix(K, N, returned) @ codec.encoder_matrix(K, N)[returned]
    expected = np.einsum("jk,gkc->gjc", round_trip, wo.base)
    assert np.allclose(decoded, expected, atol=1e-5)  # queries are encoded and served in float32
    assert not np.allclose(round_trip, np.eye(K), atol=1e-3)  # the identity is not trivial


def test_baselines_count_stragglers_as_wrong():
    G, K, N = 200, 4, 6
    labels = np.zeros((G, K), int)
    base = np.zeros((G, K, 3))
    base[..., 0] = 1.0  # a perfect base model
    wo = experiments.WorkerOutputs(K, N, np.zeros((G, K), int), labels, base, np.zeros((G, N, 3)))
    rng = np.random.default_rng(0)
    assert experiments.uncoded_correct(wo, 2, rng).mean() == pytest.approx(0.5)
    everyone = np.tile(np.arange(N), (G, 1))
    assert experiments.replication_correct(wo, everyone).all()
    no_replicas = np.tile(np.arange(K), (G, 1))  # the replicas straggle: every primary answers
    assert experiments.replication_correct(wo, no_replicas).all()
    lose_0 = np.tile([1, 2, 3, 4, 5], (G, 1))  # worker 0 straggles, its replica (worker 4) answers
    assert experiments.replication_correct(wo, lose_0).all()
    lose_3 = np.tile([0, 1, 2, 4, 5], (G, 1))  # query 3 has no replica
    assert experiments.replication_correct(wo, lose_3).mean() == pytest.approx(0.75)


def test_transforms_and_ci():
    s = np.random.default_rng(0).normal(size=(4, 3, 10))
    assert np.allclose(experiments.transform(s, "probs").sum(-1), 1)
    assert np.array_equal(experiments.transform(s, "logprobs").argmax(-1), s.argmax(-1))
    acc, lo, hi = experiments.accuracy_ci(np.random.default_rng(1).random((500, 8)) < 0.8)
    assert lo < acc < hi and hi - lo < 0.05 and abs(acc - 0.8) < 0.02


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: experiments.check_config(0, 3), "K must be an integer >= 1"),
        (lambda: experiments.check_config(8, 7), "need N >= K"),
        (lambda: experiments.check_config(8, 9, 9), "S=9 stragglers .* leave no honest worker"),
        (lambda: experiments.check_config(8, 9, -1), "S must be an integer >= 0"),
        (lambda: experiments.check_config(8, 9.5), "N must be an integer"),
        (lambda: experiments.test_groups("mnist", 8, n_test=4), "smaller than one group"),
        (lambda: experiments.test_groups("mnist", 8, n_test=20000), "exceeds the 10000 test images"),
        (lambda: experiments.transform(np.zeros((1, 2)), "softmax"), "unknown transform 'softmax'"),
        (lambda: experiments.check_params(datasets=["mnist"], precision="fp16"), "unknown precision 'fp16'; use one"),
    ],
)
def test_bad_parameters(call, match):
    with pytest.raises(ParameterError, match=match):
        call()


def test_torch_predictor_batches_consistently():
    net = tiny_mlp(0)
    x = data.to_tensor(data.load("mnist", "test")[0][:30], "mnist")
    a = torch_predictor(net, torch.device("cpu"), batch=7)(x)
    b = torch_predictor(net, torch.device("cpu"), batch=500)(x)
    assert a.shape == (30, 10) and np.allclose(a, b, atol=1e-2)
    assert torch_predictor(net, torch.device("cpu"))(x[:0]).shape == (0, 10)  # an empty batch keeps its classes


def test_fp32_is_the_model_itself_and_bf16_is_cached_apart(env):
    save_tiny(0)
    x = data.to_tensor(data.load("mnist", "test")[0][:50], "mnist")
    fp32, bf16 = served("mnist", "mlp", "cpu"), served("mnist", "mlp", "cpu", precision="bf16")
    with torch.no_grad():
        assert np.array_equal(fp32.predict(x), models.load("mnist", "mlp")(x).numpy())
    assert np.allclose(bf16.predict(x), fp32.predict(x), atol=0.1) and not np.array_equal(
        bf16.predict(x), fp32.predict(x)
    )
    auto = served("mnist", "mlp", "cpu", precision="auto")
    assert auto.precision == ("bf16" if inference.native_bf16(torch.device("cpu")) else "fp32")
    idx = np.arange(50)
    experiments.base_outputs(fp32, idx, progress=False), experiments.base_outputs(bf16, idx, progress=False)
    assert len(list((env / "cache" / "base").iterdir())) == 2


def test_lost_mask_names_the_query_each_straggler_carries_most():
    # a systematic code with one parity row: worker j carries query j, worker 3 a blend weighted on query 2
    E = np.vstack([np.eye(3), [0.2, 0.3, 0.5]])
    returned = np.array([[0, 2, 3], [0, 1, 2], [0, 1, 3]])  # stragglers: 1; 3; 2
    assert experiments.stragglers_of(returned, 4).tolist() == [[1], [3], [2]]
    mask = experiments.lost_mask(E, returned)
    assert mask.tolist() == [[False, True, False], [False, False, True], [False, False, True]]
    # the paper's Berrut code at N = K + 1: worker w >= 1 carries query w - 1 most (the "reveal" table)
    K = 8
    enc = codec.encoder_matrix(K, K + 1)
    for w in range(1, K + 1):
        ret = np.array([[i for i in range(K + 1) if i != w]])
        assert np.flatnonzero(experiments.lost_mask(enc, ret)[0]).tolist() == [w - 1]


def test_paired_ci_is_the_difference_of_means_and_clusters_widen_it():
    rng = np.random.default_rng(0)
    a = rng.random((400, 4)) < 0.8
    b = rng.random((400, 4)) < 0.7
    diff, lo, hi = experiments.paired_ci(a, b)
    assert diff == pytest.approx(a.mean() - b.mean())
    assert lo < diff < hi
    # the same rows duplicated 4 times (draws = 4): resampling rows pretends 4x the data, clusters do not
    a4, b4 = np.tile(a, (4, 1)), np.tile(b, (4, 1))
    clusters = np.tile(np.arange(400), 4)
    _, lo_rows, hi_rows = experiments.paired_ci(a4, b4)
    _, lo_cl, hi_cl = experiments.paired_ci(a4, b4, clusters=clusters)
    assert hi_cl - lo_cl > 1.5 * (hi_rows - lo_rows)
    assert (hi_cl - lo_cl) == pytest.approx(hi - lo, rel=0.25)
    with pytest.raises(ParameterError, match="same rounds"):
        experiments.paired_ci(a, b[:10])
    with pytest.raises(ParameterError, match="one id per row"):
        experiments.accuracy_ci(a, clusters=np.arange(3))


def test_bootstrap_ci_leaves_out_undefined_rows():
    v = np.array([1.0, np.nan, 0.0, 1.0])
    acc, lo, hi = experiments.bootstrap_ci(v)
    assert acc == pytest.approx(2 / 3) and 0 <= lo <= acc <= hi <= 1
    assert np.isnan(experiments.bootstrap_ci(np.array([np.nan]))[0])


def test_straggler_table_splits_lost_and_kept_queries_and_pairs_the_baselines():
    rng = np.random.default_rng(1)
    K, N, G = 4, 5, 200
    labels = rng.integers(0, 3, (G, K))
    base = np.eye(3)[labels] + rng.normal(0, 0.3, (G, K, 3))
    coded = np.einsum("nk,gkc->gnc", codec.encoder_matrix(K, N), base) + rng.normal(0, 0.3, (G, N, 3))
    wo = experiments.WorkerOutputs(K, N, np.arange(G * K).reshape(G, K), labels, base, coded)
    row = experiments.straggler_table([wo], seed=3).iloc[0]
    r = experiments.straggler_rounds(wo, seed=3)
    ok = r.correct["approxifer"]
    assert row.lost == pytest.approx(ok[r.lost].mean()) and row.kept == pytest.approx(ok[~r.lost].mean())
    assert row.lost_per_round == 1.0 and r.lost.sum(axis=1).tolist() == [1] * G
    assert row.accuracy == pytest.approx((row.lost + (K - 1) * row.kept) / K)
    for name in ("replication", "uncoded"):
        assert row[f"{name}_diff"] == pytest.approx(r.correct[name].mean() - ok.mean())
        assert row[f"{name}_diff_low"] <= row[f"{name}_diff"] <= row[f"{name}_diff_high"]
    # the table's accuracy is that of the rounds behind it (same draws as before the split)
    assert row.accuracy == pytest.approx(ok.mean()) and (row.ci_low, row.ci_high) == experiments.accuracy_ci(ok)[1:]
