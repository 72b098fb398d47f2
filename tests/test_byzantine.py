"""Byzantine rounds: per-round results, detection rates with CIs, and replication with a majority vote."""

from __future__ import annotations

import numpy as np
import pytest

from approxifer import byzantine as bz
from approxifer import codec
from approxifer.experiments import WorkerOutputs


def affine_outputs(G: int = 40, K: int = 3, E: int = 1, seed: int = 0) -> WorkerOutputs:
    """Rounds of an affine model: worker outputs are exactly the encoder's combination of the query outputs."""
    N = 2 * K + 2 * E - 1
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, (G, K))
    base = np.eye(4)[labels] * 5 + rng.normal(0, 0.1, (G, K, 4))
    coded = np.einsum("nk,gkc->gnc", codec.encoder_matrix(K, N), base)
    return WorkerOutputs(K, N, np.arange(G * K).reshape(G, K), labels, base, coded)


def test_the_paper_locator_names_every_adversary_of_an_affine_model_and_the_table_carries_cis():
    wo = affine_outputs()
    r = bz.byzantine_rounds(wo, 1, attack_kw={"sigma": 100.0}, methods=("paper", "median"), vote=True)
    assert r.present.sum(axis=1).tolist() == [1] * wo.G
    assert r.detection("paper")["all_found"].mean() == 1.0  # exactly rational honest outputs: Berlekamp–Welch
    assert r.correct["paper"].mean() == r.correct["oracle"].mean() == 1.0
    assert r.correct["none"].mean() < 1.0  # sigma = 100 does harm without a locator
    table = bz.byzantine_table(wo, 1, attack_kw={"sigma": 100.0}, methods=("paper",))
    row = table.set_index("method").loc["paper"]
    assert row.all_found == 1.0 and row.all_found_low == 1.0 and row.recall == 1.0
    assert set(table.method) == {"paper", "none", "oracle"} and (table.S == 0).all()
    assert np.isnan(table.set_index("method").loc["none", "recall"])


def test_detection_counts_only_the_adversaries_that_returned():
    r = bz.ByzantineRounds(
        K=2, N=4, E=2, S=1, correct={}, seconds={}, clusters=np.arange(2), base_correct=np.ones((2, 2), bool),
        flagged={"m": np.array([[1, 1, 0, 0], [0, 0, 1, 1]], bool)},
        present=np.array([[1, 0, 0, 0], [0, 0, 0, 0]], bool),
    )  # fmt: skip
    d = r.detection("m")
    assert d["precision"].tolist() == [0.5, 0.0] and d["recall"][0] == 1.0 and np.isnan(d["recall"][1])
    assert d["all_found"].tolist() == [1.0, 1.0]


def test_replication_vote_takes_the_majority_of_the_returned_copies():
    K, N, C = 2, 5, 3  # query 0 on workers 0, 2, 4; query 1 on workers 1, 3
    base = np.zeros((1, K, C))
    base[0, 0, 1], base[0, 1, 2] = 5.0, 5.0
    labels = np.array([[1, 2]])
    rng = np.random.default_rng(0)
    everyone = np.arange(N)[None]
    # one adversary among query 0's three copies (constant attack: predicts class 0) is outvoted
    adversary = np.array([[True, False, False, False, False]])
    ok = bz.replication_vote(base, labels, adversary, everyone, "constant", {"value": 0.0}, rng)
    assert ok.tolist() == [[True, True]]
    # two of its three copies sign-flipped: the flipped outputs vote for another class and win
    adversary = np.array([[True, False, True, False, False]])
    assert bz.replication_vote(base, labels, adversary, everyone, "sign_flip", None, rng)[0, 0] == np.False_
    # a query whose copies all straggled is not answered
    returned = np.array([[0, 2, 4]])
    ok = bz.replication_vote(base, labels, np.zeros((1, N), bool), returned, "gaussian", {"sigma": 0.1}, rng)
    assert ok.tolist() == [[True, False]]


def test_bad_methods_and_points_are_refused():
    wo = affine_outputs(G=2)
    with pytest.raises(ValueError, match="unknown method"):
        bz.byzantine_rounds(wo, 1, methods=("vote",))
    ends = WorkerOutputs(wo.K, wo.N, wo.groups, wo.labels, wo.base, wo.coded, points="endpoints")
    with pytest.raises(ValueError, match="paper's worker points"):
        bz.byzantine_rounds(ends, 1)
