"""Non-neural classifiers as black boxes: logistic regression, a gradient-boosted tree ensemble, a random forest
and k-nearest neighbours, each served through one adapter, `as_served`, exactly like the trained networks.

Every model is fitted once by a library (scikit-learn, LightGBM), then *exported* to plain arrays in a
safetensors file, and served by a short vectorised numpy predictor over those arrays; nothing is ever unpickled,
and the library is needed only to fit. A JSON model card beside the file records the test accuracy, the
hyper-parameters, the seed, the fit time, the library version, the command and the file's sha256, which loading
checks (``models/<dataset>-<name>.safetensors`` and ``.json``, in `models.models_dir()`).

=================  ===================================================  ==========================================
name               scores served (what the decoder interpolates)         persisted
=================  ===================================================  ==========================================
``logreg``         logits ``X W^T + b`` (sklearn ``decision_function``)  W, b (float64)
``gbdt``           raw boosting scores, one sum of trees per class:      every tree's node arrays and leaf values
                   LightGBM's logits (``predict(raw_score=True)``)
``random_forest``  class probabilities: the mean over trees of the       every tree's node arrays and leaf class
                   leaf's class fractions (sklearn ``predict_proba``)    counts (uint16)
``knn``            distance-weighted vote fractions of the k nearest     the PCA (mean, components), k, n_train;
                   training images in a PCA space (sklearn's             the first n_train training images are
                   ``predict_proba`` with ``weights="distance"``)        projected and indexed at load time
                                                                         (seconds, deterministic)
=================  ===================================================  ==========================================

Raw decision values are the analogue of a network's logits, so the linear model and the boosted trees serve
those; a random forest and kNN have no decision values, only vote fractions, which they serve.

Trees are stored depth-first (the left child of node i is i + 1), with float32 thresholds rounded *down* from the
library's float64 ones: for float32 inputs ``x <= t32`` holds exactly when ``x <= t64`` does, so the numpy
traversal makes the same decisions as the library. A leaf points to itself (threshold -inf, right child = itself),
so all samples and all trees descend together for a fixed number of steps.
"""

from __future__ import annotations

import json
import platform
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file, save_file

from approxifer import data, models
from approxifer.models import ModelError
from approxifer.serving import ServedModel

__all__ = [
    "DEFAULTS",
    "NAMES",
    "SCORES",
    "as_served",
    "card_path",
    "export",
    "fit",
    "fit_estimator",
    "library_scores",
    "load",
    "load_card",
    "main",
    "scorer",
    "weights_path",
]

ScoresFn = Callable[[np.ndarray], np.ndarray]  # (n, D) float32 normalised features -> (n, classes) scores

NAMES: tuple[str, ...] = ("logreg", "gbdt", "random_forest", "knn")

SCORES: dict[str, str] = {
    "logreg": "logits",
    "gbdt": "logits",
    "random_forest": "probabilities",
    "knn": "probabilities",
}

#: Hyper-parameters, chosen a priori (not tuned on the test set) so that each fit takes 1-2 minutes on 1 core.
DEFAULTS: dict[str, dict] = {
    "logreg": {"C": 0.1, "max_iter": 300, "tol": 1e-4},
    "gbdt": {"num_boost_round": 100, "learning_rate": 0.1, "num_leaves": 31, "max_bin": 63, "feature_fraction": 0.5,
             "min_data_in_leaf": 20},
    "random_forest": {"n_estimators": 100, "max_depth": 16, "max_features": "sqrt"},
    "knn": {"k": 10, "components": 50, "weights": "distance"},
}  # fmt: skip


# ---------------------------------------------------------------- the adapter


def as_served(name: str, dataset: str, fingerprint: str, scores_fn: ScoresFn, *, batch: int = 1024) -> ServedModel:
    """Any `scores_fn` on flat float32 features (n, C*H*W) -> scores (n, classes) as a `ServedModel`.

    The engine hands `predict` normalised NCHW tensors (real-valued coded queries included); the adapter flattens
    them in C, H, W order and returns float32 scores, `batch` rows at a time.
    """
    d = data.info(dataset)
    h, w, c = d.shape

    def predict(x: torch.Tensor) -> np.ndarray:
        if tuple(x.shape[1:]) != (c, h, w):
            raise ValueError(f"{name} takes inputs of shape (n, {c}, {h}, {w}), got {tuple(x.shape)}")
        flat = x.detach().to("cpu", torch.float32).reshape(len(x), -1).numpy()
        out = [np.asarray(scores_fn(flat[i : i + batch]), np.float32) for i in range(0, len(flat), batch)]
        return np.concatenate(out) if out else np.zeros((0, len(d.classes)), np.float32)

    return ServedModel(name, dataset, fingerprint, predict, "cpu")


# ---------------------------------------------------------------- predictors over exported arrays


def _round_down_f32(t: np.ndarray) -> np.ndarray:
    """The largest float32 <= t, elementwise: for float32 x, `x <= result` exactly when `x <= t`."""
    t = np.asarray(t, np.float64)
    r = t.astype(np.float32)
    over = r.astype(np.float64) > t
    r[over] = np.nextafter(r[over], np.float32(-np.inf))
    return np.maximum(r, -np.finfo(np.float32).max)  # -inf marks a leaf; no library split is that low


def _traverse(x: np.ndarray, a: dict[str, np.ndarray]) -> np.ndarray:
    """The leaf (global node index) that each row of `x` reaches in each tree: (n, trees)."""
    node = np.repeat(a["roots"][None, :].astype(np.int64), len(x), axis=0)
    rows = np.arange(len(x))[:, None]
    feature, threshold, right = a["feature"].astype(np.int64), a["threshold"], a["right"].astype(np.int64)
    leaf = np.isneginf(threshold)
    for step in range(int(a["depth"].item())):
        go_left = x[rows, feature[node]] <= threshold[node]
        node = np.where(go_left, node + 1, right[node])
        if step % 4 == 3 and leaf[node].all():
            break
    return node


def _leaf_ids(a: dict[str, np.ndarray]) -> np.ndarray:
    """Node index -> row of the leaf table (leaves in depth-first order); -1 for internal nodes."""
    leaf = np.isneginf(a["threshold"])
    return np.where(leaf, np.cumsum(leaf) - 1, -1)


def _forest_scores(a: dict[str, np.ndarray]) -> ScoresFn:
    counts = a["counts"].astype(np.float64)
    frac = counts / np.where(counts.sum(1, keepdims=True) == 0, 1, counts.sum(1, keepdims=True))
    ids = _leaf_ids(a)

    def scores(x: np.ndarray) -> np.ndarray:
        out = np.zeros((len(x), frac.shape[1]))
        for i in range(0, len(x), 256):
            leaves = ids[_traverse(x[i : i + 256], a)]  # (n, trees)
            out[i : i + 256] = frac[leaves].mean(axis=1)
        return out

    return scores


def _boosted_scores(a: dict[str, np.ndarray]) -> ScoresFn:
    values, ids, classes = a["leaf_value"], _leaf_ids(a), int(a["classes"].item())

    def scores(x: np.ndarray) -> np.ndarray:
        out = np.zeros((len(x), classes))
        for i in range(0, len(x), 256):
            v = values[ids[_traverse(x[i : i + 256], a)]]  # (n, trees); tree t adds to class t mod classes
            out[i : i + 256] = v.reshape(len(v), -1, classes).sum(axis=1)
        return out

    return scores


def _linear_scores(a: dict[str, np.ndarray]) -> ScoresFn:
    W, b = a["W"], a["b"]
    return lambda x: x.astype(np.float64) @ W.T + b


def _pca(x: np.ndarray, a: dict[str, np.ndarray]) -> np.ndarray:
    return (x.astype(np.float64) - a["mean"]) @ a["components"].T


def _knn_scores(a: dict[str, np.ndarray], dataset: str) -> ScoresFn:
    """Index the training set the model was fitted on (projected with the stored PCA); score by weighted votes."""
    x, y = data.load(dataset, "train")
    x, y = x[: int(a["n_train"].item())], y[: int(a["n_train"].item())]
    z = np.concatenate([_pca(_features(x[i : i + 10000], dataset), a) for i in range(0, len(x), 10000)])
    return _knn_index(z, y, int(a["k"].item()), len(data.info(dataset).classes), a)


def _knn_index(z: np.ndarray, y: np.ndarray, k: int, classes: int, a: dict[str, np.ndarray]) -> ScoresFn:
    zz = (z**2).sum(1)

    def scores(x: np.ndarray) -> np.ndarray:
        out = np.zeros((len(x), classes))
        for i in range(0, len(x), 256):
            q = _pca(x[i : i + 256], a)
            d2 = np.maximum((q**2).sum(1)[:, None] - 2 * q @ z.T + zz[None, :], 0)
            nn = np.argpartition(d2, k - 1, axis=1)[:, :k]
            dist = np.sqrt(np.take_along_axis(d2, nn, 1))
            with np.errstate(divide="ignore"):
                w = 1.0 / dist
            exact = (dist == 0).any(1)  # as scikit-learn: an exact match gets all the weight
            w[exact] = dist[exact] == 0
            np.add.at(out[i : i + 256], (np.arange(len(q))[:, None], y[nn]), w)
        return out / out.sum(1, keepdims=True)

    return scores


def scorer(name: str, arrays: dict[str, np.ndarray], dataset: str) -> ScoresFn:
    """The numpy predictor of an exported model: flat normalised float32 features -> float64 scores."""
    _check_name(name)
    if name == "logreg":
        return _linear_scores(arrays)
    if name == "gbdt":
        return _boosted_scores(arrays)
    if name == "random_forest":
        return _forest_scores(arrays)
    return _knn_scores(arrays, dataset)


# ---------------------------------------------------------------- fitting and export


def _features(x: np.ndarray, dataset: str) -> np.ndarray:
    """uint8 images -> the flat normalised float32 features every model here is fitted and served on."""
    return data.to_tensor(x, dataset).reshape(len(x), -1).numpy()


def _export_sklearn_forest(rf) -> dict[str, np.ndarray]:
    feature, threshold, right, counts, roots, depth, offset = [], [], [], [], [], 0, 0
    for est in rf.estimators_:
        t = est.tree_
        n, leaf = t.node_count, t.children_left < 0
        if not np.array_equal(t.children_left[~leaf], np.flatnonzero(~leaf) + 1):
            raise ModelError("expected a depth-first tree (left child of node i is i + 1)")
        thr = _round_down_f32(t.threshold)
        thr[leaf] = -np.inf
        feature.append(np.where(leaf, 0, t.feature).astype(np.uint16))
        threshold.append(thr)
        right.append((np.where(leaf, np.arange(n), t.children_right) + offset).astype(np.int32))
        w = t.value[leaf, 0, :] * t.weighted_n_node_samples[leaf, None]  # bootstrap-weighted class counts
        if np.abs(w - np.rint(w)).max() > 1e-6 or w.max() > np.iinfo(np.uint16).max:
            raise ModelError("leaf class counts are not integers below 65536")
        counts.append(np.rint(w).astype(np.uint16))
        roots.append(offset)
        depth, offset = max(depth, t.max_depth), offset + n
    return {
        "feature": np.concatenate(feature), "threshold": np.concatenate(threshold), "right": np.concatenate(right),
        "counts": np.concatenate(counts), "roots": np.asarray(roots, np.int32), "depth": np.asarray([depth], np.int64),
    }  # fmt: skip


def _export_lightgbm(booster) -> dict[str, np.ndarray]:
    dump = booster.dump_model()
    if not dump["objective"].startswith("multiclass") or dump.get("average_output"):
        raise ModelError(f"expected a multiclass boosted model, got objective {dump['objective']!r}")
    feature, threshold, right, values, roots, depth = [], [], [], [], [], 0

    def walk(node: dict, level: int) -> None:
        nonlocal depth
        i = len(threshold)
        if "leaf_value" in node:
            feature.append(0), threshold.append(-np.inf), right.append(i), values.append(node["leaf_value"])
            depth = max(depth, level)
            return
        if node["decision_type"] != "<=" or node["missing_type"] not in ("None", "NaN"):
            raise ModelError(f"unsupported split {node['decision_type']} / missing {node['missing_type']}")
        feature.append(node["split_feature"]), threshold.append(node["threshold"]), right.append(-1)
        walk(node["left_child"], level + 1)
        right[i] = len(threshold)
        walk(node["right_child"], level + 1)

    for tree in dump["tree_info"]:
        roots.append(len(threshold))
        walk(tree["tree_structure"], 0)
    thr = np.asarray(threshold, np.float64)
    fin = np.isfinite(thr)
    thr32 = np.full(len(thr), -np.inf, np.float32)
    thr32[fin] = _round_down_f32(thr[fin])
    return {
        "feature": np.asarray(feature, np.uint16), "threshold": thr32, "right": np.asarray(right, np.int32),
        "leaf_value": np.asarray(values, np.float64), "roots": np.asarray(roots, np.int32),
        "depth": np.asarray([depth], np.int64), "classes": np.asarray([dump["num_class"]], np.int64),
    }  # fmt: skip


def _fit_pca(X: np.ndarray, components: int) -> dict[str, np.ndarray]:
    """Principal components from the covariance's eigenvectors (float64), signs fixed: largest entry positive."""
    mean = X.mean(0, dtype=np.float64)
    cov = np.zeros((X.shape[1], X.shape[1]))
    for i in range(0, len(X), 10000):
        c = X[i : i + 10000].astype(np.float64) - mean
        cov += c.T @ c
    vals, vecs = np.linalg.eigh(cov)
    comp = vecs[:, np.argsort(vals)[::-1][:components]].T
    comp *= np.sign(comp[np.arange(components), np.abs(comp).argmax(1)])[:, None]
    return {"mean": mean, "components": np.ascontiguousarray(comp)}


def fit_estimator(name: str, X: np.ndarray, y: np.ndarray, params: dict, *, seed: int = 0, threads: int = 1):
    """Fit `name` on features X (n, D) float32 and labels y; return (library estimator or None, arrays, library)."""
    _check_name(name)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(threads):
        if name == "logreg":
            import sklearn
            from sklearn.linear_model import LogisticRegression

            est = LogisticRegression(**params, random_state=seed).fit(X.astype(np.float64), y)
            arrays = {"W": est.coef_.astype(np.float64), "b": est.intercept_.astype(np.float64)}
            return est, arrays, f"scikit-learn {sklearn.__version__}"
        if name == "random_forest":
            import sklearn
            from sklearn.ensemble import RandomForestClassifier

            est = RandomForestClassifier(**params, n_jobs=threads, random_state=seed).fit(X, y)
            return est, _export_sklearn_forest(est), f"scikit-learn {sklearn.__version__}"
        if name == "gbdt":
            import lightgbm as lgb

            p = dict(params)
            rounds = p.pop("num_boost_round")
            p |= {"objective": "multiclass", "num_class": int(y.max()) + 1, "num_threads": threads, "seed": seed,
                  "deterministic": True, "force_row_wise": True, "verbosity": -1}  # fmt: skip
            est = lgb.train(p, lgb.Dataset(X, y), rounds)
            return est, _export_lightgbm(est), f"lightgbm {lgb.__version__}"
        pca = _fit_pca(X, params["components"])
        arrays = pca | {"k": np.asarray([params["k"]], np.int64), "n_train": np.asarray([len(X)], np.int64)}
        return None, arrays, f"numpy {np.__version__}"


def library_scores(name: str, est, X: np.ndarray) -> np.ndarray:
    """The library's own scores, to check the exported predictor against (tests)."""
    if name == "logreg":
        return est.decision_function(X)
    if name == "gbdt":
        return est.predict(X, raw_score=True)
    if name == "random_forest":
        return est.predict_proba(X)
    raise ValueError(f"{name} has no library estimator to compare with")


def export(name: str, dataset: str, arrays: dict[str, np.ndarray], card: dict) -> dict:
    """Write the arrays (safetensors) and the model card with the file's sha256 and size; return the card."""
    path = weights_path(dataset, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, path, metadata={"model": name})
    card = {**card, "file": path.name, "file_bytes": path.stat().st_size, "weights_sha256": models.file_sha256(path)}
    card_path(dataset, name).write_text(json.dumps(card, indent=2) + "\n")
    return card


def fit(
    dataset: str,
    name: str,
    *,
    seed: int = 0,
    threads: int = 1,
    n_train: int | None = None,
    params: dict | None = None,
    command: str | None = None,
) -> dict:
    """Fit `name` on `dataset`'s training set (the first `n_train` images), export it, score the exported predictor
    on the whole test set, and write ``models/<dataset>-<name>.safetensors`` + ``.json``; return the card."""
    _check_name(name)
    data.info(dataset)
    params = DEFAULTS[name] | (params or {})
    x, y = data.load(dataset, "train")
    X, y = _features(x[:n_train], dataset), y[:n_train]
    t0 = time.perf_counter()
    est, arrays, library = fit_estimator(name, X, y, params, seed=seed, threads=threads)
    fit_s = time.perf_counter() - t0
    del X
    xt, yt = data.load(dataset, "test")
    t1 = time.perf_counter()  # scored through the serving path (kNN indexes its training images here)
    served = as_served(name, dataset, "", scorer(name, arrays, dataset))
    acc = float((served.predict(data.to_tensor(xt, dataset)).argmax(1) == yt).mean())
    card = {
        "dataset": dataset,
        "model": name,
        "scores": SCORES[name],
        "test_accuracy": acc,
        "hyperparameters": params,
        "seed": seed,
        "n_train": len(y),
        "wall_time_s": round(fit_s, 1),
        "test_time_s": round(time.perf_counter() - t1, 1),
        "threads": threads,
        "library": library,
        "numpy_version": np.__version__,
        "machine": f"{platform.processor() or platform.machine()}",
        "persistence": "safetensors arrays served by approxifer.classical's numpy predictor (no pickle)"
        + ("; the training set is projected and indexed at load time" if name == "knn" else ""),
        "command": command or f"approxifer fit-classical {dataset} {name}",
    }
    if name == "logreg":
        card["lbfgs_iterations"] = int(np.max(est.n_iter_))
    return export(name, dataset, arrays, card)


# ---------------------------------------------------------------- loading


def _check_name(name: str) -> None:
    if name not in NAMES:
        raise ValueError(f"unknown classical model {name!r}; known: {', '.join(NAMES)}")


def weights_path(dataset: str, name: str) -> Path:
    return models.models_dir() / f"{dataset}-{name}.safetensors"


def card_path(dataset: str, name: str) -> Path:
    return models.models_dir() / f"{dataset}-{name}.json"


def load_card(dataset: str, name: str) -> dict:
    data.info(dataset)
    _check_name(name)
    path, wpath = card_path(dataset, name), weights_path(dataset, name)
    if not path.exists() or not wpath.exists():
        raise ModelError(
            f"no fitted {name} for {dataset} in {models.models_dir()} (looked for {path.name} and {wpath.name}); "
            f"create it with `approxifer fit-classical {dataset} {name}`"
        )
    return models.read_card(path, dataset=dataset, model=name)


def load(dataset: str, name: str) -> ServedModel:
    """The fitted model as a black box, after checking its file's sha256 against the model card."""
    card = load_card(dataset, name)
    path = weights_path(dataset, name)
    got = models.file_sha256(path)
    if got != card["weights_sha256"]:
        raise ModelError(
            f"{path.name} has sha256 {got} but its model card records {card['weights_sha256']}: the file was "
            f"changed or damaged; restore it (git checkout {path.name}) or refit"
        )
    arrays = load_file(path)
    return as_served(f"{dataset}-{name}", dataset, got, scorer(name, arrays, dataset))


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    import argparse

    p = argparse.ArgumentParser(
        prog="approxifer fit-classical", description="Fit a non-neural classifier and write models/<dataset>-<name>.*"
    )
    p.add_argument("dataset", choices=list(data.DATASETS))
    p.add_argument("name", choices=list(NAMES))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="CPU threads for the fit (default 1)")
    a = p.parse_args(argv)
    command = "approxifer fit-classical " + shlex.join(argv if argv is not None else sys.argv[1:])
    card = fit(a.dataset, a.name, seed=a.seed, threads=a.threads, command=command)
    keys = ("dataset", "model", "test_accuracy", "wall_time_s", "file_bytes", "library")
    print(json.dumps({k: card[k] for k in keys}))
