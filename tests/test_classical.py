"""Non-neural models behind the one adapter: the exported numpy predictors equal the libraries, every model runs
through the engine as a black box, and unknown names and tampered files are refused."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from approxifer import classical, data, experiments, models, zoo
from approxifer.experiments import ParameterError
from approxifer.models import ModelError

TINY = {  # small fits: seconds, not minutes
    "logreg": {"max_iter": 30},
    "gbdt": {"num_boost_round": 4, "num_leaves": 15},
    "random_forest": {"n_estimators": 8, "max_depth": 10},
    "knn": {"k": 5, "components": 20},
}


@pytest.fixture(scope="module")
def mnist():
    x, y = data.load("mnist", "train")
    xt, yt = data.load("mnist", "test")
    return classical._features(x[:1500], "mnist"), y[:1500], xt[:100], yt[:100]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """The four models, fitted small into a temporary models folder (and a temporary engine cache)."""
    root = tmp_path_factory.mktemp("classical")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("APPROXIFER_MODELS", str(root / "models"))
        mp.setenv("APPROXIFER_CACHE", str(root / "cache"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # lbfgs stops early on purpose
            cards = {n: classical.fit("mnist", n, n_train=1000, params=TINY[n]) for n in classical.NAMES}
    return root, cards  # the environment is restored: tests that use these files point to them themselves


@pytest.mark.parametrize("name", ["logreg", "gbdt", "random_forest"])
def test_exported_predictor_equals_the_library(mnist, name):
    X, y, xt, _ = mnist
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est, arrays, _ = classical.fit_estimator(name, X, y, classical.DEFAULTS[name] | TINY[name])
    served = classical.as_served(name, "mnist", "test", classical.scorer(name, arrays, "mnist"))
    ours = served.predict(data.to_tensor(xt, "mnist"))
    theirs = classical.library_scores(name, est, classical._features(xt, "mnist")).astype(np.float32)
    assert ours.dtype == np.float32 and ours.shape == (100, 10)
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6)


def test_exported_trees_decide_like_the_library_on_coded_queries(mnist):
    """Coded queries are off the data manifold (real-valued mixtures); the traversal must still agree exactly."""
    X, y, xt, _ = mnist
    est, arrays, _ = classical.fit_estimator(
        "random_forest", X, y, classical.DEFAULTS["random_forest"] | TINY["random_forest"]
    )
    coded = experiments.codec.encode(data.to_tensor(xt[:96], "mnist").view(8, 12, 1, 28, 28), 27, axis=1).flatten(0, 1)
    flat = coded.reshape(len(coded), -1).numpy()
    np.testing.assert_allclose(
        classical.scorer("random_forest", arrays, "mnist")(flat), est.predict_proba(flat), atol=1e-12
    )


def test_knn_equals_scikit_learn_distance_weighted_votes(mnist):
    from sklearn.neighbors import KNeighborsClassifier

    X, y, xt, _ = mnist
    _, arrays, _ = classical.fit_estimator("knn", X, y, classical.DEFAULTS["knn"] | TINY["knn"])
    z, q = classical._pca(X, arrays), classical._pca(classical._features(xt, "mnist"), arrays)
    ours = classical._knn_index(z, y, 5, 10, arrays)(classical._features(xt, "mnist"))
    theirs = KNeighborsClassifier(5, weights="distance", algorithm="brute").fit(z, y).predict_proba(q)
    np.testing.assert_allclose(ours, theirs, atol=1e-9)
    assert arrays["components"] @ arrays["components"].T == pytest.approx(np.eye(20), abs=1e-9)  # orthonormal PCA


def test_float32_thresholds_rounded_down_make_the_same_decisions():
    rng = np.random.default_rng(0)
    t = np.concatenate([rng.normal(size=2000), rng.normal(size=2000).astype(np.float32), [0.0, -0.0, 1e-40]])
    t32 = classical._round_down_f32(t)
    assert np.all(t32.astype(np.float64) <= t)
    x = np.concatenate([t32, np.nextafter(t32, np.float32(np.inf)), rng.normal(size=t.size).astype(np.float32)])
    tt = np.tile(t, 3)
    assert np.array_equal(x.astype(np.float64) <= tt, x <= np.tile(t32, 3))


def test_fitted_files_have_a_complete_card(fitted):
    root, cards = fitted
    for name, card in cards.items():
        path = root / "models" / f"mnist-{name}.safetensors"
        assert card["weights_sha256"] == models.file_sha256(path) and card["file_bytes"] == path.stat().st_size
        on_disk = json.loads((root / "models" / f"mnist-{name}.json").read_text())
        assert on_disk == card
        for key in ("test_accuracy", "hyperparameters", "seed", "wall_time_s", "library", "command", "scores"):
            assert key in card
        assert 0.5 < card["test_accuracy"] <= 1.0, name
        assert card["command"] == f"approxifer fit-classical mnist {name}"


@pytest.mark.parametrize("name", classical.NAMES)
def test_every_model_runs_through_the_engine_as_a_black_box(fitted, monkeypatch, name):
    root, cards = fitted
    monkeypatch.setenv("APPROXIFER_MODELS", str(root / "models"))
    monkeypatch.setenv("APPROXIFER_CACHE", str(root / "cache"))
    model = zoo.get("mnist", name)
    assert model.fingerprint == cards[name]["weights_sha256"]
    wo = experiments.worker_outputs(model, 4, 5, n_test=24, progress=False)
    assert wo.coded.shape == (6, 5, 10) and np.isfinite(wo.coded).all()
    x, _ = data.load("mnist", "test")
    np.testing.assert_array_equal(
        wo.base, model.predict(data.to_tensor(x[wo.groups.ravel()], "mnist")).reshape(6, 4, 10)
    )
    table = experiments.straggler_table([wo], baselines=False)
    assert 0 <= table.loc[0, "accuracy"] <= 1 and table.loc[0, "queries"] == 24
    if classical.SCORES[name] == "probabilities":  # vote fractions on the real queries
        np.testing.assert_allclose(wo.base.sum(-1), 1, atol=1e-6)


def test_a_neural_model_comes_through_the_same_door(tmp_path, monkeypatch):
    monkeypatch.setenv("APPROXIFER_MODELS", str(tmp_path))
    torch.manual_seed(0)
    models.save(models.build("mlp", "mnist"), "mnist", "mlp", {"note": "random weights for tests"}, half=False)
    assert zoo.kind("mlp") == "neural" and zoo.get("mnist", "mlp").predict(torch.zeros(3, 1, 28, 28)).shape == (3, 10)


def test_unknown_names_list_the_known_ones():
    with pytest.raises(ValueError, match="unknown classical model 'svm'; known: logreg, gbdt, random_forest, knn"):
        classical.load("mnist", "svm")
    with pytest.raises(ParameterError, match=r"unknown models 'svm', 'xgb'; known: neural .*mlp.*; classical logreg"):
        zoo.check_names(["svm", "knn", "xgb"])
    with pytest.raises(ParameterError, match="unknown model 'svm'"):
        zoo.get("mnist", "svm")
    with pytest.raises(ParameterError, match="list of names"):
        zoo.check_names("knn")


def test_a_tampered_file_is_rejected(fitted, tmp_path, monkeypatch):
    root, _ = fitted
    for suffix in ("json", "safetensors"):
        (tmp_path / f"mnist-gbdt.{suffix}").write_bytes((root / "models" / f"mnist-gbdt.{suffix}").read_bytes())
    monkeypatch.setenv("APPROXIFER_MODELS", str(tmp_path))
    classical.load("mnist", "gbdt")  # intact: loads
    blob = bytearray((tmp_path / "mnist-gbdt.safetensors").read_bytes())
    blob[-3] ^= 1
    (tmp_path / "mnist-gbdt.safetensors").write_bytes(bytes(blob))
    with pytest.raises(ModelError, match=r"mnist-gbdt\.safetensors has sha256 .* but its model card records"):
        classical.load("mnist", "gbdt")


def test_a_missing_model_says_how_to_fit_it(tmp_path, monkeypatch):
    monkeypatch.setenv("APPROXIFER_MODELS", str(tmp_path))
    with pytest.raises(ModelError, match="approxifer fit-classical mnist knn"):
        zoo.get("mnist", "knn")


def test_the_adapter_checks_the_input_shape():
    served = classical.as_served("m", "mnist", "f", lambda x: np.zeros((len(x), 10)))
    assert served.predict(torch.zeros(2, 1, 28, 28)).dtype == np.float32
    with pytest.raises(ValueError, match=r"takes inputs of shape \(n, 1, 28, 28\)"):
        served.predict(torch.zeros(2, 3, 32, 32))


@pytest.mark.parametrize("name", classical.NAMES)
def test_shipped_models_load_verified_and_match_their_card(name):
    try:
        card = classical.load_card("mnist", name)
    except ModelError:
        pytest.skip(f"mnist-{name} not fitted")
    x, y = data.load("mnist", "test")
    acc = (classical.load("mnist", name).predict(data.to_tensor(x[:500], "mnist")).argmax(1) == y[:500]).mean()
    assert acc > card["test_accuracy"] - 0.03  # the first 500 test images, not the whole set


def test_pairs_take_one_list_or_one_per_dataset():
    both = ["mnist", "fashion-mnist"]
    assert zoo.pairs(both, ["resnet18"]) == [("mnist", "resnet18"), ("fashion-mnist", "resnet18")]
    per = {"mnist": ["lenet5", "knn"], "fashion-mnist": ["mlp"]}
    assert zoo.pairs(both, per) == [("mnist", "lenet5"), ("mnist", "knn"), ("fashion-mnist", "mlp")]
    with pytest.raises(ParameterError, match="models maps datasets mnist but datasets is mnist, fashion-mnist"):
        zoo.pairs(both, {"mnist": ["mlp"]})
    with pytest.raises(ParameterError, match=r"not trained yet .*approxifer train cifar10 lenet5"):
        zoo.pairs(["cifar10"], {"cifar10": ["lenet5"]})
