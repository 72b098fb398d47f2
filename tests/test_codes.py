"""The training-free codes (`codes`) and the study behind their chapter (`code_study`): properties of every code,
agreement with SciPy's Floater–Hormann interpolator, exactness where claimed, bad inputs, and the engine."""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.interpolate import FloaterHormannInterpolator

from approxifer import code_study, codec, codes, data, experiments, locator
from approxifer.codes import Code, interpolation_matrix
from approxifer.serving import ServedModel

SCHEMES = list(codes.SCHEMES)


@st.composite
def configs(draw, max_k: int = 8):
    """(scheme, K, N, returned, seed): N = K + S with 1 <= S <= 3 and a random non-empty returned set in any order."""
    scheme = draw(st.sampled_from(SCHEMES))
    K = draw(st.integers(2, max_k))
    N = K + draw(st.integers(1, 3))
    returned = draw(st.permutations(range(N)).flatmap(lambda p: st.integers(1, N).map(lambda r: list(p[:r]))))
    return scheme, K, N, returned, draw(st.integers(0, 2**32 - 1))


@st.composite
def node_sets(draw, max_n: int = 12):
    """Distinct nodes in [-1, 1], in random order, at least 1e-3 apart."""
    n = draw(st.integers(1, max_n))
    grid = draw(st.lists(st.integers(-1000, 1000), min_size=n, max_size=n, unique=True))
    return np.array(grid) / 1000.0


# ---------------------------------------------------------------- weights


@settings(max_examples=80, deadline=None)
@given(node_sets(), st.integers(0, 3), st.integers(0, 2**32 - 1))
def test_floater_hormann_agrees_with_scipy(nodes, d, seed):
    """SciPy's FloaterHormannInterpolator is the oracle, nodes given in line order; d is capped at n - 1."""
    rng = np.random.default_rng(seed)
    line = np.sort(nodes)[::-1]
    values = rng.normal(size=(len(nodes), 3))
    targets = rng.uniform(-1.2, 1.2, 7)
    ours = interpolation_matrix(line, targets, d) @ values
    scipy = FloaterHormannInterpolator(line, values, d=min(d, len(nodes) - 1))(targets)
    assert np.allclose(ours, scipy, rtol=1e-9, atol=1e-9 * np.abs(scipy).max())
    # the column order follows the nodes as given
    perm = rng.permutation(len(nodes))
    assert np.allclose(interpolation_matrix(line[perm], targets, d) @ values[perm], ours, atol=1e-9)


@settings(max_examples=60, deadline=None)
@given(node_sets(), st.integers(0, 3), st.integers(0, 2**32 - 1))
def test_weights_sum_to_one_hit_nodes_and_reproduce_degree_d_polynomials(nodes, d, seed):
    rng = np.random.default_rng(seed)
    targets = np.concatenate([rng.uniform(-1, 1, 5), nodes[:2]])
    W = interpolation_matrix(nodes, targets, d)
    assert np.allclose(W.sum(axis=1), 1.0, atol=1e-9)
    assert np.array_equal(W[5:], np.eye(len(nodes))[:2])  # a target on a node: that node's value
    deg = min(d, len(nodes) - 1)
    poly = np.polynomial.Polynomial(rng.normal(size=deg + 1))
    assert np.allclose(W @ poly(nodes), poly(targets), atol=1e-8 * max(1, np.abs(poly.coef).sum()))


def test_berrut_is_floater_hormann_of_degree_zero_and_the_codec_itself():
    for K, N in [(1, 1), (3, 3), (8, 9), (8, 11), (12, 13)]:
        c = codes.berrut(K, N)
        assert np.array_equal(c.encoder, codec.encoder_matrix(K, N))
        for returned in ([0], list(range(N)), list(dict.fromkeys([N - 1, 0])), list(range(N))[::-2]):
            assert np.array_equal(c.decoder(returned), codec.decoder_matrix(K, N, returned))
        assert np.array_equal(codes.berrut(K, N, "endpoints").encoder, codec.encoder_matrix(K, N, "endpoints"))
    assert np.allclose(codes.floater_hormann_weights(np.array([3.0, 1.0, 0.0, -2.0]), 0), [1, -1, 1, -1])


# ---------------------------------------------------------------- every code


@settings(max_examples=60, deadline=None)
@given(configs())
def test_every_code_decodes_from_any_subset(cfg):
    scheme, K, N, returned, seed = cfg
    code = codes.make(scheme, K, N)
    assert code.encoder.shape == (N, K) and np.allclose(code.encoder.sum(axis=1), 1.0, atol=1e-9)
    D = code.decoder(returned)
    assert D.shape == (K, len(returned)) and np.allclose(D.sum(axis=1), 1.0, atol=1e-9)
    Y = np.random.default_rng(seed).normal(size=(2, len(returned), 5))
    out = code.decode(Y, returned, axis=1)
    assert out.shape == (2, K, 5) and np.isfinite(out).all()
    assert np.allclose(code.decode(np.full((len(returned), 3), -2.5), returned), -2.5)  # constants are exact
    order = np.argsort(returned)  # the order of the returned workers does not matter
    assert np.allclose(code.decode(Y[:, order], np.array(returned)[order], axis=1), out, atol=1e-12)
    with pytest.raises(ValueError):
        code.decoder(returned + returned[:1])


@settings(max_examples=40, deadline=None)
@given(configs())
def test_numpy_and_torch_batches_agree(cfg):
    scheme, K, N, returned, seed = cfg
    code = codes.make(scheme, K, N)
    X = np.random.default_rng(seed).normal(size=(3, K, 2, 2))
    coded = code.encode(X, axis=1)
    assert coded.shape == (3, N, 2, 2)
    assert np.allclose(coded[1], np.einsum("nk,kab->nab", code.encoder, X[1]))
    assert torch.allclose(code.encode(torch.from_numpy(X), axis=1), torch.from_numpy(coded))
    Y = coded[:, returned]
    assert torch.allclose(code.decode(torch.from_numpy(Y), returned, axis=1),
                          torch.from_numpy(code.decode(Y, returned, axis=1)))  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(configs())
def test_systematic_code_is_exact_when_every_systematic_worker_returns(cfg):
    _, K, N, returned, seed = cfg
    for code in (codes.systematic(K, N), codes.make("syslebesgue", K, N)):
        assert np.array_equal(code.systematic, np.r_[np.arange(K), -np.ones(N - K, int)])
        assert np.array_equal(code.encoder[:K], np.eye(K))  # worker j < K gets query j unchanged
        X = np.random.default_rng(seed).normal(size=(K, 4))
        Y = np.tanh(code.encode(X) ** 3)  # any model: systematic outputs are its outputs on the raw queries
        with_all = sorted(set(returned) | set(range(K)))
        assert code.exact(with_all) and np.array_equal(code.decode(Y[with_all], with_all), np.tanh(X**3))
        assert code.exact(returned) == (set(range(K)) <= set(returned))


def test_non_systematic_codes_are_never_exact():
    for scheme in ("approxifer", "fh1", "fh2", "endpoints", "lebesgue"):
        code = codes.make(scheme, 8, 9)
        assert (code.systematic == -1).all() and not code.exact(range(9))


def test_parity_placements():
    a = codes.query_points(8)
    mid = codes.systematic(8, 9).worker_nodes[8:]
    assert np.allclose(mid, [(a[3] + a[4]) / 2])  # the middle gap
    three = codes.systematic(8, 11).worker_nodes[8:]
    assert np.allclose(three, -three[::-1]) and len(set(three.round(9))) == 3  # symmetric, distinct
    ends = codes.systematic(8, 17).worker_nodes[8:]  # all K + 1 gaps, the ends included
    assert ends[0] == pytest.approx((1 + a[0]) / 2) and ends[-1] == pytest.approx((a[-1] - 1) / 2)
    assert np.allclose(codes.systematic(4, 5, [0.3]).worker_nodes, [*codes.query_points(4), 0.3])


def test_lebesgue_points_improve_on_their_start_and_are_deterministic():
    for K, N, S in [(4, 5, 1), (4, 6, 2)]:
        paper = codes.mean_lebesgue(codes.berrut(K, N), S)
        best = codes.lebesgue_code(K, N)
        assert codes.mean_lebesgue(best, S) < paper and np.abs(best.worker_nodes).max() <= 1
        assert np.array_equal(best.worker_nodes, codes.lebesgue_points(K, N, S))
        sys_l = codes.systematic(K, N, "lebesgue")
        assert codes.mean_lebesgue(sys_l, S) <= codes.mean_lebesgue(codes.systematic(K, N), S) + 1e-12
        assert np.array_equal(sys_l.worker_nodes[:K], codes.query_points(K))
    assert (4, 5, 1, False) in codes.SEARCH_SECONDS
    # the vectorised objective is the mean of the per-set Lebesgue constants
    code = codes.berrut(5, 7)
    sets = np.array(list(combinations(range(7), 5)))
    assert codes._berrut_lebesgue(code.query_nodes, code.worker_nodes, sets) == pytest.approx(
        codes.mean_lebesgue(code, 2)
    )
    assert codes.lebesgue_constant(codes.systematic(4, 5), range(5)) == 1.0


# ---------------------------------------------------------------- bad inputs


X8 = np.zeros((8, 3))


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: codes.make("bogus", 8, 9), "unknown scheme 'bogus'"),
        (lambda: codes.make("systematic", 8, 7), r"N \(workers\) must be >= K"),
        (lambda: codes.berrut(0, 3), "K must be >= 1"),
        (lambda: codes.floater_hormann(4, 5, -1), "d must be >= 0"),
        (lambda: codes.floater_hormann(4, 5, 1.5), "d must be an integer"),
        (lambda: codes.systematic(4, 4), "at least one parity worker"),
        (lambda: codes.systematic(4, 5, "bogus"), "parity must be one of midpoints, lebesgue"),
        (lambda: codes.systematic(4, 5, [codes.query_points(4)[1]]), "differ from the query points"),
        (lambda: codes.systematic(4, 6, [0.1]), "must hold 2 nodes, got 1"),
        (lambda: codes.systematic(2, 6, "midpoints"), "at most K \\+ 1 = 3 parity nodes"),
        (lambda: Code("x", [0.0, 0.5], [1.0, 1.0, 0.0]), "worker_nodes must be distinct"),
        (lambda: Code("x", [0.0, np.nan], [1.0, 0.5, 0.0]), "query_nodes must be finite"),
        (lambda: Code("x", [0.0, 0.5, 0.7], [1.0, 0.1]), r"N \(workers\) must be >= K"),
        (lambda: Code("x", "ab", [1.0]), "query_nodes must be a 1-D sequence of real numbers"),
        (lambda: codes.make("approxifer", 8, 9).decoder([]), "returned is empty"),
        (lambda: codes.make("approxifer", 8, 9).decoder([9]), "worker 9, outside 0..8"),
        (lambda: codes.make("fh1", 8, 9).decoder([1, 1]), r"more than once: \[1\]"),
        (lambda: codes.make("fh1", 8, 9).decode(np.zeros((2, 3)), [0, 1, 2]), "2 rows along axis 0 but the code"),
        (lambda: codes.make("fh1", 8, 9).encode(X8, axis=2), "axis=2 is not an axis of X"),
        (lambda: codes.make("fh1", 8, 9).encode(np.full((8, 3), np.inf)), "X contains NaN or Inf"),
        (lambda: codes.make("fh1", 8, 9).encode(X8[:7]), "7 rows along axis 0 but the code expects 8 queries"),
        (lambda: codes.mean_lebesgue(codes.berrut(3, 4), 4), "leave no worker"),
        (lambda: codes.lebesgue_points(3, 4, 1, fixed=[0.1, 0.2, 0.3, 0.4]), "none of the N=4 is left"),
        (lambda: codes.lebesgue_points(3, 4, 1, start=[0.0, 2.0, 0.5, -0.5]), r"in \[-1, 1\]"),
    ],
)
def test_value_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_type_errors():
    code = codes.make("systematic", 4, 5)
    with pytest.raises(TypeError, match="numpy array or a torch tensor, got list"):
        code.encode([[0.0]] * 4)
    with pytest.raises(TypeError, match="floating-point dtype, got int64"):
        code.encode(np.zeros((4, 2), dtype=np.int64))
    with pytest.raises(TypeError, match="sequence of worker indices, got str"):
        code.decoder("012")


# ---------------------------------------------------------------- the engine


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("APPROXIFER_CACHE", str(tmp_path / "cache"))
    return tmp_path


def linear_model(calls: list | None = None) -> ServedModel:
    torch.manual_seed(0)
    lin = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10)).double()

    def predict(x):
        if calls is not None:
            calls.append(len(x))
        return lin(x.double()).detach().numpy().astype(np.float32)

    return ServedModel("mnist-linear", "mnist", "linear-0", predict)


def test_worker_outputs_of_a_code_run_only_its_coded_rows(env):
    calls = []
    model = linear_model(calls)
    code = codes.systematic(4, 6)
    wo = code_study.code_outputs(model, code, n_test=40)
    base = experiments.base_outputs(model, wo.groups, progress=False)
    assert sum(calls) == 40 + 2 * wo.G  # the base pass, then only the 2 parity rows of each group
    assert wo.points == "custom" and np.array_equal(wo.coded[:, :4], base)
    imgs, _ = data.load("mnist", "test")
    q = data.to_tensor(imgs[wo.groups[1]], "mnist")
    assert np.allclose(wo.coded[1, 4:], model.predict(code.encode(q)[4:]), atol=1e-4)
    # the approxifer code is the codec's own outputs (one cache entry), other encoders are cached apart
    ax = code_study.code_outputs(model, codes.berrut(4, 6), n_test=40)
    assert ax.points == "paper" and np.array_equal(ax.coded, experiments.worker_outputs(model, 4, 6, n_test=40).coded)
    assert len(list((env / "cache" / "coded").iterdir())) == 2
    with pytest.raises(experiments.ParameterError, match=r"finite \(N, K\) = \(6, 4\) matrix"):
        experiments.worker_outputs(model, 4, 6, n_test=40, encoder=np.ones((5, 4)))


def test_serving_matches_the_straggler_engine_and_its_baselines(env):
    model = linear_model()
    wo = experiments.worker_outputs(model, 4, 6, n_test=120)
    table = experiments.straggler_table([wo], seed=3)
    r = code_study.serve(codes.berrut(4, 6), wo, seed=3)
    assert r.correct.mean() == pytest.approx(table.loc[0, "accuracy"], abs=1e-12)
    base = code_study.baseline_rounds(wo, seed=3)
    assert base["replication"].correct.mean() == pytest.approx(table.loc[0, "replication"], abs=1e-12)
    assert base["uncoded"].correct.mean() == pytest.approx(table.loc[0, "uncoded"], abs=1e-12)
    # uncoded's lost queries are exactly its unanswered ones: never right
    assert not (base["uncoded"].correct & base["uncoded"].lost).any() and base["uncoded"].lost.sum() == 2 * wo.G
    sys_ = code_study.serve(codes.systematic(4, 6), code_study.code_outputs(model, codes.systematic(4, 6), n_test=120),
                            seed=3)  # fmt: skip
    assert np.array_equal(sys_.returned, r.returned)  # the same stragglers for every scheme
    t = code_study.compare({"approxifer": r, "systematic": sys_} | base)
    assert t.loc["systematic", "diff"] == pytest.approx(sys_.correct.mean() - r.correct.mean())
    assert t.loc["replication", "gain"] == pytest.approx(sys_.correct.mean() - base["replication"].correct.mean())
    assert t.loc["systematic", "gain"] == 0 and t.loc["approxifer", "diff"] == 0


def test_parm_rounds_share_the_straggler_and_the_duel_pairs_queries(env):
    model = linear_model()
    wo = experiments.worker_outputs(model, 4, 5, n_test=200)
    parity = wo.base.sum(axis=1)  # a perfect parity model: sum of the base outputs
    parm = code_study.parm_rounds(wo, parity, seed=1)
    assert np.array_equal(parm.correct, wo.base.argmax(-1) == wo.labels)  # exact reconstruction
    code = codes.systematic(4, 5)
    sys_ = code_study.serve(code, code_study.code_outputs(model, code, n_test=200), seed=1)
    assert np.array_equal(parm.returned, sys_.returned)
    duel = code_study.reconstructed(sys_, parm)
    missing = 10 - sys_.returned.sum(axis=1)
    rows = np.flatnonzero(missing < 4)
    assert duel["rec"] == pytest.approx(sys_.correct[rows, missing[rows]].mean())
    assert duel["parm_rec"] == pytest.approx((wo.base.argmax(-1) == wo.labels)[rows, missing[rows]].mean())


@pytest.mark.parametrize(("K", "S"), [(4, 1), (6, 2), (5, 3)])
def test_the_replication_identity_holds_over_every_straggler_set(K, S):
    """Replication loses a query with probability S(S-1)/(N(N-1)) (served twice) or S/N: over every returned set
    (each equally likely) with an always-right base model; hence acc(systematic) - acc(replication) =
    S/N (a_rec - a_base S/(N-1))."""
    N = K + S
    sets = np.array(list(combinations(range(N), N - S)))
    G = len(sets)
    right = np.broadcast_to(np.eye(10)[0], (G, K, 10))  # the base model says class 0, the label
    wo = experiments.WorkerOutputs(K, N, np.zeros((G, K), int), np.zeros((G, K), int), right, np.zeros((G, N, 10)))
    lost = (S / K) * S * (S - 1) / (N * (N - 1)) + (K - S) / K * S / N
    assert experiments.replication_correct(wo, sets).mean() == pytest.approx(1 - lost, abs=1e-12)
    for a_base, a_rec in [(1.0, 0.3), (0.9, 0.05)]:
        gain = (1 - S / N) * a_base + S / N * a_rec - a_base * (1 - lost)
        assert gain == pytest.approx(S / N * (a_rec - a_base * S / (N - 1)), abs=1e-12)


def test_error_sources_split_exactly_and_vanish_for_an_affine_model(env):
    model = linear_model()
    items = {}
    for scheme in ("approxifer", "systematic"):
        code = codes.make(scheme, 4, 5)
        wo = code_study.code_outputs(model, code, n_test=120)
        items[scheme] = (code, wo, code_study.serve(code, wo))
    t = code_study.error_sources(items)
    assert (t["model error"] < 1e-5).all()  # f is affine: only the code's round trip errs (served in float32)
    assert np.allclose(t["accuracy"], t["if affine"], atol=0.01)
    assert t.loc[("systematic", "all"), "code error"] < t.loc[("approxifer", "all"), "code error"]


def test_code_aware_locator_finds_an_adversary_the_paper_points_miss():
    """Linear outputs of the systematic code are Berrut's interpolant of type (K-1, K-1) in the node: the paper's
    locator finds a corrupted worker at the code's nodes; at the paper's points the outputs are not that rational
    function, and it misses some."""
    K, E, G = 3, 1, 500
    N = 2 * K + 2 * E - 1
    rng = np.random.default_rng(0)
    bad = rng.integers(0, N, G)
    for scheme, at_paper in (("systematic", 0.95), ("approxifer", 1.0)):
        code = codes.make(scheme, K, N)
        Y = code.encode(rng.normal(size=(G, K, 4)), axis=1)
        Y[np.arange(G), bad] += rng.choice([-10.0, 10.0], (G, 4))
        assert (code_study._locate_at(Y, code.worker_nodes, K, E)[:, 0] == bad).mean() >= 0.99
        assert (locator.locate(Y, range(N), K, N, E, axis=1)[:, 0] == bad).mean() <= at_paper


def test_study_parameters_are_checked():
    with pytest.raises(experiments.ParameterError, match="must include 'approxifer' and 'systematic'"):
        code_study.check_params(schemes=["fh1"], grid=[[8, 1]], datasets=["mnist"])
    with pytest.raises(experiments.ParameterError, match="S >= 1 straggler"):
        code_study.check_params(schemes=["approxifer", "systematic"], grid=[[8, 0]], datasets=["mnist"])
    assert math.isclose(codes.mean_lebesgue(codes.systematic(4, 5), 0), 1.0)


def test_any_subset_of_the_berrut_code_is_the_stragglers_chapter_curve(env):
    model = linear_model()
    wo = experiments.worker_outputs(model, 3, 5, n_test=60)
    ours = code_study.any_subset(codes.berrut(3, 5), wo, seed=2)
    theirs = experiments.any_subset(wo, seed=2)
    assert np.allclose(ours["acc"].to_numpy(), theirs["accuracy"].to_numpy(), atol=1e-12)
    assert ours["returned"].tolist() == theirs["returned"].tolist()


def test_the_study_counts_wins_and_says_the_verdict_in_words():
    """`verdict_short` reads the paired CIs at S = 1: every CI above zero is "ahead of", below "behind"."""
    rows = {  # (dataset, K, S, scheme): the systematic code's gain over the scheme and its CI
        ("mnist", 8, 1, "approxifer"): (0.05, 0.02, 0.08),
        ("mnist", 10, 1, "approxifer"): (0.04, 0.01, 0.07),
        ("mnist", 8, 2, "approxifer"): (-0.01, -0.03, 0.01),
        ("mnist", 8, 1, "replication"): (0.00, -0.01, 0.01),
        ("mnist", 10, 1, "replication"): (0.02, 0.01, 0.03),
        ("mnist", 8, 1, "parm"): (-0.2, -0.3, -0.1),
    }
    results = pd.DataFrame.from_dict(rows, orient="index", columns=["gain", "gain_lo", "gain_hi"])
    fh1 = {("mnist", 8, 1, "fh1"): (-0.03, -0.04, -0.02), ("mnist", 8, 2, "fh1"): (0.01, -0.01, 0.03)}
    results = pd.concat([results, pd.DataFrame.from_dict(fh1, orient="index", columns=["diff", "diff_lo", "diff_hi"])])
    results.index = pd.MultiIndex.from_tuples(results.index, names=["dataset", "K", "S", "scheme"])
    theory = pd.DataFrame({"a_rec": [0.1], "a_base": [0.99], "break-even": [0.12], "break-even, guessing": [0.2]},
                          index=pd.MultiIndex.from_tuples([("mnist", 8, 1)], names=["dataset", "K", "S"]))  # fmt: skip
    errors = pd.DataFrame(columns=["accuracy", "if affine", "code error", "model error"])
    study = code_study.GridStudy(results, theory, errors, pd.DataFrame())
    glue = study.glue()
    words = "at S = 1: ahead of ApproxIFER, ahead of replication in 1 of 2 configurations, behind ParM"
    assert glue["verdict_short"] == words
    assert (glue["wins_approxifer"], glue["cells_approxifer"], glue["s1_cells_approxifer"]) == (2, 3, 2)
    assert glue["losses_parm"] == 1 and glue["theory_below_guess"] == 1
    assert (glue["alt_fh1_behind"], glue["alt_fh1_ahead"], glue["alt_fh1_cells"]) == (1, 0, 2)
    assert (glue["alt_fh1_min"], glue["alt_fh1_max"], glue["alt_fh1_s1_max"]) == (-0.03, 0.01, -0.03)


def test_an_unordered_returned_set_is_refused_as_by_the_codec():
    """The rows of Y follow `returned`: a set has no order, so decoding from one would be silently wrong."""
    code = codes.systematic(3, 4)
    with pytest.raises(TypeError, match="unordered"):
        code.decode(np.zeros((3, 2)), {0, 1, 3})
