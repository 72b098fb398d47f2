"""The serving system without Ray: schemes, the straggler model, the frontend on the simulator, the command's checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from approxifer import baselines, codec, codes, data, experiments, locator
from approxifer.cluster import bench, schemes
from approxifer.cluster.delays import Stragglers
from approxifer.cluster.frontend import ANSWERED, FAILED, Frontend, poisson_arrivals
from approxifer.cluster.simulate import ServiceModel, SimBackend, measure_stages, simulate
from approxifer.errors import ParameterError

C = 10
W = np.random.default_rng(7).normal(size=(784, C)).astype(np.float32) / 28


def linear(x: torch.Tensor) -> np.ndarray:
    """A fake model: fixed random logits of the flattened image."""
    return x.reshape(len(x), -1).numpy() @ W


def const(v: float) -> np.ndarray:
    return np.full(4, v)


FAST = ServiceModel(const(1e-3), const(2e-4), const(5e-5), const(2e-4), {"submit": const(2e-5)})


class OutputSim(SimBackend):
    """The simulator with real outputs: each result carries the fake model's output on what the worker was sent."""

    def submit(self, round_id, worker, x):
        self.inputs = getattr(self, "inputs", {})
        self.inputs[round_id, worker] = x
        super().submit(round_id, worker, x)

    def wait(self, timeout):
        out = super().wait(timeout)
        for r in out:
            r.output = linear(torch.from_numpy(self.inputs[r.round, r.worker])[None])[0]
        return out


def mnist_inputs(seed: int = 0):
    x, y = data.load("mnist", "test")
    order = np.random.default_rng(seed).permutation(len(x))  # experiments.test_groups' order
    return (lambda ids: data.to_tensor(x[order[ids]], "mnist")), y[order]


# ---------------------------------------------------------------- the frontend equals the engine's rounds


@pytest.mark.parametrize("spec", ["shift=1,mean=4,p=0.1,stall=20", "none"])
def test_frontend_rounds_equal_the_engines(spec):
    """Full groups are experiments.test_groups; each answer is the engine's decode of the returned set."""
    K, S, Q, seed = 4, 1, 64, 3
    scheme = schemes.make("approxifer", K, S)
    inputs, labels = mnist_inputs(seed)
    fe = Frontend(scheme, OutputSim(scheme.N, FAST, Stragglers.parse(spec), seed), inputs=inputs, max_wait=10.0)
    trace = fe.run(poisson_arrivals(Q, 100.0, seed=seed))
    groups = np.array([r["queries"] for r in trace.rounds])
    np.testing.assert_array_equal(
        np.random.default_rng(seed).permutation(10_000)[groups],
        experiments.test_groups("mnist", K, seed=seed, n_test=Q),
    )
    returned = np.array([r["returned"] for r in trace.rounds])
    assert returned.shape == (Q // K, scheme.N - S)
    x, _ = data.load("mnist", "test")
    X = data.to_tensor(x[experiments.test_groups("mnist", K, seed=seed, n_test=Q).ravel()], "mnist")
    coded = codec.encode(X.view(Q // K, K, *X.shape[1:]), scheme.N, axis=1).flatten(0, 1)
    Y = linear(coded).reshape(Q // K, scheme.N, C)
    engine = experiments.decode_groups(Y, returned, K, scheme.N).argmax(-1)
    np.testing.assert_array_equal(trace.prediction[groups], engine)
    assert (trace.status == ANSWERED).all()
    assert trace.summary(labels[:Q])["accuracy"] == pytest.approx((engine == labels[groups]).mean())


def test_a_partial_group_is_padded_and_answers_only_its_queries():
    scheme = schemes.make("approxifer", 4, 1)
    inputs, _ = mnist_inputs()
    fe = Frontend(scheme, OutputSim(scheme.N, FAST, Stragglers.parse("none"), 0), inputs=inputs, max_wait=0.01)
    trace = fe.run(np.array([0.0, 0.001, 1.0]))  # two queries together, then one alone
    assert [r["queries"] for r in trace.rounds] == [[0, 1], [2]]
    assert (trace.status == ANSWERED).all() and trace.answer[2] - trace.arrival[2] >= 0.01
    X = inputs([0, 1, 0, 1])
    ret = trace.rounds[0]["returned"]
    want = codec.decode(linear(codec.encode(X, 5))[ret], ret, 4, 5).argmax(-1)[:2]
    np.testing.assert_array_equal(trace.prediction[:2], want)


def test_systematic_schemes_answer_each_query_as_its_worker_returns():
    """Uncoded, ParM and the systematic code send query j to worker j on arrival: a lone query needs no group."""
    inputs, _ = mnist_inputs()
    for name in ("uncoded", "parm", "systematic"):
        scheme = schemes.make(name, 4, 1)
        fe = Frontend(scheme, OutputSim(scheme.N, FAST, Stragglers.parse("none"), 0), inputs=inputs, max_wait=5.0)
        trace = fe.run(np.array([0.0]))
        assert trace.status[0] == ANSWERED and trace.answer[0] < 0.01  # long before the group's 5 s wait
        assert trace.prediction[0] == linear(inputs([0]))[0].argmax()


def test_deadline_decodes_from_the_subset_that_returned():
    """Every task stalls with probability 1/2 for 1 s: at a 50 ms deadline each round decodes from its fast workers."""
    K, S, Q = 4, 1, 40
    scheme = schemes.make("approxifer", K, S)
    inputs, _ = mnist_inputs()
    spec = Stragglers(shift=1.0, mean=0.0, p=0.5, stall=1000.0)
    fe = Frontend(scheme, OutputSim(scheme.N, FAST, spec, 1), inputs=inputs, max_wait=10.0, deadline=0.05)
    trace = fe.run(poisson_arrivals(Q, 50.0, seed=1))
    late = [r for r in trace.rounds if r["how"] == "deadline"]
    assert any(r["returned"] for r in late) and all(len(r["returned"]) < scheme.N - S for r in late)
    for r in late:
        q = r["queries"]
        if r["returned"]:
            Y = linear(codec.encode(inputs(q), scheme.N))[r["returned"]]
            np.testing.assert_array_equal(trace.prediction[q], codec.decode(Y, r["returned"], K, scheme.N).argmax(-1))
        else:
            assert (trace.status[q] == FAILED).all() and {trace.reason[i] for i in q} == {"deadline"}
    assert (trace.answer - trace.dispatch)[trace.status == ANSWERED].max() <= 0.05 + 1e-3


def test_byzantine_mode_waits_for_the_locators_count_and_drops_the_suspect():
    K, E = 2, 1
    scheme = schemes.make("approxifer", K, 1, E)
    assert scheme.N == locator.min_returned(K, E) + 1 and scheme.need == scheme.N - 1
    inputs, _ = mnist_inputs()
    fe = Frontend(scheme, OutputSim(scheme.N, FAST, Stragglers(), 0), inputs=inputs, max_wait=10.0)
    trace = fe.run(poisson_arrivals(8, 100.0))
    for r in trace.rounds:
        assert len(r["returned"]) == locator.min_returned(K, E)
        Y = linear(codec.encode(inputs(r["queries"]), scheme.N))[r["returned"]]
        want = locator.robust_decode(Y, r["returned"], K, scheme.N, E)[0].argmax(-1)
        np.testing.assert_array_equal(trace.prediction[r["queries"]], want)


@settings(max_examples=25, deadline=None)
@given(
    name=st.sampled_from(["uncoded", "replication", "parm", "approxifer", "systematic"]),
    K=st.integers(2, 5),
    S=st.integers(1, 2),
    deadline=st.sampled_from([None, 0.002, 0.02]),
    max_wait=st.sampled_from([0.0, 0.01, 1.0]),
    seed=st.integers(0, 50),
)
def test_every_query_ends_exactly_once(name, K, S, deadline, max_wait, seed):
    scheme = schemes.make(name, K, 1 if name == "parm" else S)
    fe = Frontend(scheme, SimBackend(scheme.N, FAST, Stragglers(p=0.2), seed), deadline=deadline, max_wait=max_wait)
    trace = fe.run(poisson_arrivals(30, 200.0, seed=seed))
    s = trace.summary()
    assert s["lost"] == 0 and s["answered"] + s["failed"] == s["sent"] == 30
    assert (trace.answer >= trace.arrival).all()
    assert not s["answered"] or s["p50_ms"] <= s["p99_ms"] <= s["p999_ms"]
    assert sorted(q for r in trace.rounds for q in r["queries"]) == list(range(30))


def test_a_run_stops_at_its_limit_and_fails_what_is_left_explicitly():
    scheme = schemes.make("uncoded", 2)
    slow = Stragglers(shift=5000.0, mean=0.0, p=0.0)  # every task takes 5 s
    trace = Frontend(scheme, SimBackend(2, FAST, slow, 0), limit=1.0).run(np.array([0.0, 0.1]))
    assert (trace.status == FAILED).all() and trace.reason == ["limit", "limit"]
    assert trace.summary()["lost"] == 0


# ---------------------------------------------------------------- schemes


def test_schemes_decode_like_the_package():
    rng = np.random.default_rng(0)
    K = 4
    X = torch.from_numpy(rng.normal(size=(K, 6)).astype(np.float32))
    f = rng.normal(size=(6, C)).astype(np.float32)
    out = lambda s: s.encode(X).numpy() @ f  # noqa: E731
    base = X.numpy() @ f
    unc, rep, parm, apx = (schemes.make(n, K, 1) for n in ("uncoded", "replication", "parm", "approxifer"))
    assert unc.answerable([2, 0]).tolist() == [True, False, True, False]
    np.testing.assert_allclose(unc.decode([2, 0], out(unc)[[2, 0]])[[0, 2]], base[[0, 2]])
    assert rep.N == 5 and rep.answerable([4, 1]).tolist() == [True, True, False, False]
    np.testing.assert_allclose(rep.decode([4, 1], out(rep)[[4, 1]])[[0, 1]], base[[0, 1]], rtol=1e-6)
    assert parm.roles == ("base",) * 4 + ("parity",) and parm.answerable([0, 1, 3]).tolist() == [1, 1, 0, 1]
    ret = [4, 0, 3, 1]  # base worker 2 missing: reconstructed from the parity (exact for a linear model)
    assert parm.answerable(ret).all()
    want = baselines.reconstruct(out(parm)[4][None], base[None], np.array([2]))[0]
    np.testing.assert_allclose(parm.decode(ret, out(parm)[ret]), want, rtol=1e-5)
    np.testing.assert_allclose(want[2], base[2], atol=1e-4)
    ret = [3, 0, 4, 1]
    assert apx.answerable(ret[:3]).sum() == 0 and apx.answerable(ret).all() and apx.salvageable(ret[:1]).all()
    np.testing.assert_allclose(apx.decode(ret, out(apx)[ret]), codec.decode(out(apx)[ret], ret, K, 5), rtol=1e-6)


def test_the_systematic_code_answers_its_own_queries_exactly_and_decodes_the_rest():
    rng = np.random.default_rng(1)
    K, S = 4, 2
    X = torch.from_numpy(rng.normal(size=(K, 6)).astype(np.float32))
    f = rng.normal(size=(6, C)).astype(np.float32)
    sys_ = schemes.make("systematic", K, S)
    code = codes.systematic(K, K + S)
    Y = sys_.encode(X).numpy() @ f
    np.testing.assert_allclose(Y[:K], X.numpy() @ f, rtol=1e-6)  # workers 0..K-1 run the raw queries
    assert sys_.N == 6 and sys_.early(2) == (2,) and sys_.early(3) == (3,)
    assert sys_.answerable([5, 1]).tolist() == [False, True, False, False]
    ret = [5, 1, 4, 0]  # N - S results: queries 2, 3 decoded from all returned nodes
    assert sys_.answerable(ret).all() and sys_.salvageable([5]).all()
    got = sys_.decode(ret, Y[ret])
    np.testing.assert_allclose(got, code.decode(Y[ret], ret), rtol=1e-6)
    np.testing.assert_allclose(got[[0, 1]], (X.numpy() @ f)[[0, 1]], rtol=1e-5)  # exact where the worker returned
    with pytest.raises(ParameterError, match="Byzantine"):
        schemes.make("systematic", K, 1, E=1)


def test_a_linear_code_is_added_in_a_few_lines():
    """Another code as encoder/decoder matrices (here the Berrut matrices themselves) serves like ApproxIFER."""
    enc, dec = schemes.linear_code(codec.encoder_matrix, codec.decoder_matrix)
    schemes.register("berrut-matrices", lambda K, S, E, N: schemes.CodedScheme("berrut-matrices", K, K + S, S,
                                                                               encoder=enc, decoder=dec))  # fmt: skip
    try:
        mine, apx = schemes.make("berrut-matrices", 3, 2), schemes.make("approxifer", 3, 2)
        X = torch.randn(3, 7, generator=torch.Generator().manual_seed(0))
        np.testing.assert_allclose(mine.encode(X), apx.encode(X), rtol=1e-5, atol=1e-6)
        Y = np.random.default_rng(1).normal(size=(3, C))
        np.testing.assert_allclose(mine.decode([4, 0, 2], Y), apx.decode([4, 0, 2], Y))
    finally:
        del schemes.SCHEMES["berrut-matrices"]


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("sparse", 4, 1), "unknown scheme 'sparse'"),
        (("approxifer", 0, 1), "K must be an integer >= 1"),
        (("approxifer", 4, -1), "S must be an integer >= 0"),
        (("approxifer", 4, 5, 0, 5), "S=5 stragglers of N=5 workers"),
        (("approxifer", 4, 1, 0, 3), "need N >= K"),
        (("approxifer", 4, 2, 1, 10), "needs 9 results"),
        (("parm", 4, 2), "ParM with one parity"),
        (("parm", 1, 1), "ParM with one parity"),
        (("replication", 4, 0), "need N > K"),
        (("uncoded", 4, 1, 1), "Byzantine mode"),
    ],
)
def test_bad_schemes(args, match):
    with pytest.raises(ParameterError, match=match):
        schemes.make(*args)


# ---------------------------------------------------------------- straggler model, load, simulator


def test_straggler_delays_are_seeded_per_task_and_have_the_stated_mean():
    s = Stragglers(shift=2, mean=3, p=0.05, stall=10)
    assert s.delay(0, 5, 1) == s.delay(0, 5, 1) != s.delay(0, 5, 2)
    d = np.array([s.delay(0, r, w) for r in range(4000) for w in range(5)]) * 1e3
    assert d.min() >= 2 and abs(d.mean() - (2 + 3 + 0.05 * 10 * s.median_ms)) < 0.4
    assert Stragglers.parse(s.spec()) == s and Stragglers.parse("none").delay(0, 1, 1) == 0


@pytest.mark.parametrize(
    ("spec", "match"),
    [("shift=2,mean", "bad straggler spec item 'mean'"), ("wobble=3", "bad straggler spec"),
     ("p=2", "probability"), ("mean=-1", "finite number >= 0"), ("hog=0.5", "must be a number"),
     ("shift=x", "must be a number")],
)  # fmt: skip
def test_bad_straggler_specs(spec, match):
    with pytest.raises(ParameterError, match=match):
        Stragglers.parse(spec)


def test_poisson_arrivals_are_bounded_in_count_and_time():
    t = poisson_arrivals(10_000, 100.0, max_seconds=20.0, seed=1)
    assert 1850 < len(t) < 2150 and t.max() <= 20.0 and (np.diff(t) > 0).all()
    assert len(poisson_arrivals(50, 100.0)) == 50
    for bad in (0, -1.0, math.nan):
        with pytest.raises(ParameterError, match="rate must be"):
            poisson_arrivals(5, bad)


class OneStall:
    """Worker 0 stalls 1 s in round 0; no other delay."""

    def delay(self, seed: int, round_id: int, worker: int) -> float:
        return 1.0 if (round_id, worker) == (0, 0) else 0.0


def test_simulator_is_fcfs_and_deterministic_and_coded_rounds_skip_a_stalled_queue():
    """Worker 0's stall in round 0 holds up its queue, not the later rounds: they decode without it."""
    svc = ServiceModel(const(0.01), const(0.001), const(0.0), const(0.002), {})
    lone = simulate(schemes.make("uncoded", 1), svc, queries=1, rate=1.0, stragglers=Stragglers.parse("none"))
    assert lone.trace.latency[0] == pytest.approx(0.013)  # inbound + compute + outbound
    two = Frontend(schemes.make("uncoded", 1), SimBackend(1, svc, Stragglers.parse("none"), 0)).run(np.zeros(2))
    assert sorted(two.latency) == pytest.approx([0.013, 0.023])  # the second waits for the first
    runs = [simulate(schemes.make("approxifer", 4, 1), FAST, queries=300, rate=80.0, seed=2) for _ in range(2)]
    np.testing.assert_array_equal(runs[0].trace.latency, runs[1].trace.latency)
    trace = Frontend(schemes.make("approxifer", 4, 1), SimBackend(5, svc, OneStall(), 0), max_wait=10.0).run(
        np.arange(16) * 0.01
    )
    assert max(trace.latency) < 0.1 and all(0 not in r["returned"] for r in trace.rounds)


def test_service_model_reads_a_trace_and_measure_stages_times_real_code():
    run = simulate(schemes.make("approxifer", 4, 1), FAST, queries=200, rate=100.0)
    done = [t for t in run.trace.tasks.values() if "start" in t]  # the others were still running at the end
    assert len(done) >= 4 * 50 and all(t["submit"] <= t["start"] <= t["end"] <= t["recv"] for t in done)
    svc = ServiceModel.from_trace(run.trace)
    assert svc.compute == pytest.approx(1e-3) and np.allclose(svc.outbound, 2e-4) and len(svc.inbound)
    stages = measure_stages(schemes.make("approxifer", 4, 1), "mnist", reps=5)
    assert set(stages) == {"encode", "decode"} and all((v > 0).all() for v in stages.values())


# ---------------------------------------------------------------- the command's checks (no Ray started)


def argv(*extra: str) -> list[str]:
    base = ["--dataset", "mnist", "--arch", "mlp", "--scheme", "approxifer", "--K", "4", "--queries", "10"]
    return [*base, "--rate", "40", *extra]


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--S", "5", "--N", "5"], "S=5 stragglers of N=5 workers leave none"),
        (["--rate", "0"], "rate must be > 0"),
        (["--rate", "-3"], "rate must be > 0"),
        (["--scheme", "parm", "--arch", "lenet5"], r"approxifer train-parity mnist lenet5 4"),
        (["--arch", "vgg16"], r"approxifer train mnist vgg16"),
        (["--kill-worker", "5"], "kill-worker 5 is not a worker of approxifer: 0..4"),
        (["--deadline", "0"], "deadline must be > 0"),
        (["--straggler", "p=3"], "probability"),
        (["--dataset", "imagenet"], "unknown dataset"),
        (["--scheme", "lt"], "unknown scheme"),
    ],
)
def test_serve_bench_rejects_bad_arguments_with_one_message(extra, match, capsys):
    with pytest.raises(ParameterError, match=match):
        bench.check(bench.parse(argv(*extra)))
    with pytest.raises(SystemExit) as e:
        bench.main(argv(*extra))
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and len(err[0]) < 400


# ---------------------------------------------------------------- the chapter's study (on simulated runs)


def test_the_serving_chapter_reads_its_runs_into_tables_figures_and_glue():
    """`chapters.serving.chapter` on simulated runs with real outputs: every table without NaN, every glued value."""
    from approxifer.chapters import serving as sv
    from approxifer.cluster.frontend import Run

    inputs, labels = mnist_inputs()

    def run(scheme, rate, deadline=None, **config):
        arrivals = poisson_arrivals(24, rate)
        fe = Frontend(scheme, OutputSim(scheme.N, FAST, Stragglers(), 0), inputs=inputs, max_wait=2 * scheme.K / rate,
                      deadline=None if deadline is None else deadline / 1e3)  # fmt: skip
        return Run(fe.run(arrivals), labels[:24], {"load_1min": 1.0, "cores": 2, "restarts": 0} | config)

    K, S, rates = 2, [1, 2], [20.0, 40.0]
    runs = {(sv.label(s), r): run(s, r) for r in rates for s in sv.plan(K, S)}
    main = schemes.make("approxifer", K, 1)
    timed = {d: run(main, 40.0, d) for d in (3.0, 6.0)}
    fault = run(main, 40.0, kill_worker=1, kill_round=3)
    ch = sv.chapter(runs, timed, fault, dataset="mnist", arch="mlp", K=K, S=S, rates=rates, stragglers=Stragglers(),
                    sim_Ks=[2, 4], sim_S=[1], sim_queries=200)  # fmt: skip
    assert set(ch.tables) == {"tails", "deadline", "fault", "accounting", "validation", "extrapolation"}
    for name, table in ch.tables.items():
        text = table.to_string()
        assert "nan" not in text.lower() and "True" not in text and "False" not in text, name
    assert (ch.tables["accounting"]["lost"] == 0).all() and len(ch.tables["tails"]) == 2 * 5
    assert set(ch.figures) == {"tails", "deadline", "fault", "extrapolation"}
    for fig in ch.figures.values():
        assert fig.get_figwidth() <= 7.5 and len(fig.axes) <= 2
    assert ch.glue["srv_fault_lost"] == 0 and ch.glue["srv_vs_uncoded"] in ("shorter than", "longer than",
                                                                             "not distinguishable from")  # fmt: skip
    assert all(not (isinstance(v, float) and math.isnan(v)) for v in ch.glue.values())
