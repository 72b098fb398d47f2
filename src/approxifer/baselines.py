"""ParM (Kosaian, Rashmi, Venkataraman, SOSP 2019) with r = 1, side by side with ApproxIFER on the same queries.

ParM serves K queries on K + 1 workers: K run the base model on one query each (systematic), the last runs a
*parity model* on the sum of the K queries. When base worker j straggles, its output is reconstructed as
``parity output - sum of the other K - 1 base outputs``; when the parity worker straggles, the K exact outputs are
returned. ApproxIFER with N = K + 1 workers and S = 1 uses the same redundancy.

Choices, all following ParM's public training code (repository Thesys-lab/parity-models, `train/`):

- Encoder: the plain sum of the K *normalised* queries (`data.to_tensor` outputs), not divided by K. ParM's
  AdditionEncoder sums its inputs, which are ``ToTensor()`` pixels for MNIST/Fashion-MNIST and normalised pixels for
  CIFAR-10; our base models take normalised inputs, so the parity model does too.
- Parity model: the base architecture (`models.build(arch, dataset)`), trained with mean-squared error (over all
  output coordinates) to output the *sum of the base model's logits* on the K queries.
- Training pairs: each epoch draws K independent seeded permutations of the training set; parity sample s of the
  epoch sums images perm_1[s], ..., perm_K[s], so every image appears K times per epoch (one of our epochs shows the
  parity model as many parity samples as there are training images, K of ParM's epochs). Each image is augmented
  (the recipe's random crop / flip, `train.augment`) *before* summing, and the target is the sum of the base model's
  outputs on the *un-augmented* images, read from a cache computed once per base model (`train_outputs`, keyed by
  the weights' sha256). ParM's ``CodeDataset`` does the same: it augments the images it encodes but keeps the base
  outputs it computed once on the un-augmented images, so that no base-model inference runs inside the training
  loop. A recipe with ``crop_pad=0, flip=False`` trains without augmentation, where the targets are exact.
- Optimiser: ParM uses Adam (lr 1e-3, weight decay 1e-5, batches of 64 for K = 2 and 32 otherwise, up to 500
  epochs). We reuse `train`'s recipe (the base model's, see `parity_recipe_for`), schedule, seeded generators and
  checkpoints: SGD with Nesterov momentum and a one-cycle learning rate. Unlike Adam, SGD is not scale-invariant,
  and both the summed inputs and the MSE targets grow with K (plain SGD at the base recipe's rate diverges for
  K = 4 on the MNIST MLP), so the gradient's global norm is clipped to `GRAD_CLIP`.

Inference everywhere (base, parity, ApproxIFER's workers) goes through `serving.torch_predictor` (float32, or bf16
autocast when asked for), so both schemes see the same numerical precision.

Serving (`parm_round`): the groups of `experiments.test_groups` and the straggler draws of
`experiments.straggler_table` (one uniformly random worker of K + 1 per round, worker j < K being query j's base
worker for ParM and worker K its parity worker). Metrics, each with a 95 % CI and each gap as a paired difference over
the same rounds: the *lost query* of the rounds where a base worker straggled — for ParM the reconstructed query
(degraded-mode accuracy), for ApproxIFER the query the straggling worker carries most (`experiments.lost_mask`: at
N = K + 1 each coded query is essentially one query, so that query has lost its node); all K queries of those
rounds; and all queries of every round. (Scoring ApproxIFER's query j when worker j straggles, as an earlier
version did, pairs the wrong query: worker j carries query j - 1.)
"""

from __future__ import annotations

import json
import math
import shlex
import sys
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from approxifer import cache, codec, data, experiments, inference, models, serving, train
from approxifer.experiments import CACHE_VERSION, ParameterError, WorkerOutputs
from approxifer.train import Recipe

__all__ = [
    "PARITY_RECIPES",
    "ParmRounds",
    "by_straggler",
    "check_params",
    "comparison",
    "evaluate_parity",
    "finish_parity",
    "gaps",
    "load_parity",
    "load_parity_card",
    "parity_name",
    "parity_outputs",
    "parity_recipe_for",
    "parity_training",
    "parm_round",
    "parm_table",
    "reconstruct",
    "reconstruct_all",
    "served_parity",
    "train_outputs",
    "train_parity",
]


# ---------------------------------------------------------------- names and checks


def parity_name(arch: str, K: int) -> str:
    """The parity model's name: ``<arch>-parityK<K>`` (its files are ``models/<dataset>-<arch>-parityK<K>.*``)."""
    return f"{arch}{parity_variant(K)}"


def _check(dataset: object, arch: object, K: object) -> int:
    if not isinstance(dataset, str) or dataset not in data.DATASETS:
        raise ParameterError(f"unknown dataset {dataset!r}; known: {', '.join(data.DATASETS)}")
    if not isinstance(arch, str) or arch not in models.ARCHS:
        raise ParameterError(f"unknown architecture {arch!r}; known: {', '.join(models.ARCHS)}")
    if isinstance(K, bool) or not isinstance(K, int | np.integer) or K < 2:
        raise ParameterError(f"ParM needs K >= 2 queries per parity (an integer), got K={K!r}")
    return int(K)


def _train_command(dataset: str, arch: str, K: int) -> str:
    return f"approxifer train-parity {dataset} {arch} {K}"


# ---------------------------------------------------------------- recipe

GRAD_CLIP = 1.0  # global gradient-norm clip: MSE gradients grow ~K^2 (inputs and targets both scale with K)

# Exceptions to "the base model's recipe" (none yet: (dataset, arch) -> Recipe).
PARITY_RECIPES: dict[tuple[str, str], Recipe] = {}


def parity_recipe_for(dataset: str, arch: str, **overrides) -> Recipe:
    """The parity recipe: PARITY_RECIPES, else the base model's recipe (`train.recipe_for`: the same augmentation,
    batch size, epochs and learning rate) without label smoothing (unused by MSE) and without its warm restart (a
    parity model trains in one cycle); keyword overrides (None: keep)."""
    base = PARITY_RECIPES.get((dataset, arch)) or train.recipe_for(dataset, arch, label_smoothing=0.0, restart_epochs=0)
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})


# ---------------------------------------------------------------- reconstruction


def reconstruct(parity: np.ndarray, base: np.ndarray, straggler: np.ndarray) -> np.ndarray:
    """ParM's outputs when worker `straggler[g]` (0..K) did not return: (G, C), (G, K, C), (G,) -> (G, K, C).

    Worker j < K is query j's base worker: its output becomes ``parity - sum_{i != j} base_i``; worker K is the
    parity worker: the K base outputs are returned as they are.
    """
    out = np.array(base, dtype=np.float64, copy=True)
    G, K, _ = out.shape
    straggler = np.asarray(straggler)
    if parity.shape != (G, out.shape[2]) or straggler.shape != (G,) or straggler.min(initial=0) < 0:
        raise ParameterError(
            f"shapes do not match: parity {parity.shape}, base {base.shape}, straggler {straggler.shape}"
        )
    if straggler.max(initial=0) > K:
        raise ParameterError(f"straggler indices must be in 0..K={K}, got {straggler.max()}")
    rows = np.flatnonzero(straggler < K)
    j = straggler[rows]
    out[rows, j] = 0.0  # the straggler's output never arrived: never read it
    out[rows, j] = parity[rows] - out[rows].sum(axis=1)
    return out


def reconstruct_all(parity: np.ndarray, base: np.ndarray) -> np.ndarray:
    """Every query's reconstruction as if its own worker straggled: (G, C), (G, K, C) -> (G, K, C)."""
    base = np.asarray(base, dtype=np.float64)
    return np.asarray(parity, np.float64)[:, None, :] - (base.sum(axis=1, keepdims=True) - base)


# ---------------------------------------------------------------- training targets (cached)


def train_outputs(model: serving.ServedModel, n: int | None = None, *, progress: bool = True) -> np.ndarray:
    """The served model's outputs on the first `n` (default: all) un-augmented training images, (n, classes).

    Cached per model (its sha256) in ``experiments.cache_dir()/train``; computed once, reused by every K.
    """
    n_all = data.info(model.dataset).counts["train"]
    idx = np.arange(n_all if n is None else min(int(n), n_all))
    return experiments.base_outputs(model, idx, split="train", progress=progress)


# ---------------------------------------------------------------- evaluation


def _summed_queries(dataset: str, groups: np.ndarray) -> torch.Tensor:
    x, _ = data.load(dataset, "test")
    q = data.to_tensor(x[groups.ravel()], dataset)
    return q.view(*groups.shape, *q.shape[1:]).sum(dim=1)


def evaluate_parity(
    model: nn.Module,
    base: serving.ServedModel,
    K: int,
    device: torch.device,
    *,
    n_test: int | None = None,
    seed: int = 0,
) -> dict:
    """On the test groups of K: the parity model's MSE to the sum of base outputs, and degraded-mode accuracy (every
    query reconstructed as if its own worker straggled, scored against the labels)."""
    groups = experiments.test_groups(base.dataset, K, seed=seed, n_test=n_test)
    _, y = data.load(base.dataset, "test")
    b = experiments.base_outputs(base, groups, progress=False).astype(np.float64)
    p = inference.predict(model, _summed_queries(base.dataset, groups), device).numpy().astype(np.float64)
    mse = float(np.mean((p - b.sum(axis=1)) ** 2))
    acc = float(np.mean(reconstruct_all(p, b).argmax(-1) == y[groups]))
    return {"test_mse": mse, "degraded_accuracy": acc}


# ---------------------------------------------------------------- training


def train_parity(
    dataset: str,
    arch: str,
    K: int,
    base_arch: str | None = None,
    recipe: Recipe | None = None,
    *,
    device: str = "auto",
    resume: bool = False,
    warm_start: bool = False,
    subset: int | None = None,
    stop_after: int | None = None,
    run_dir: Path | None = None,
    progress: bool = True,
) -> tuple[nn.Module, dict]:
    """Train a parity model for `K` queries of `dataset` over the trained base model `base_arch` (default: `arch`).

    Deterministic and resumable like `train.train`: the K permutations of an epoch and the augmentation of every
    batch are functions of (seed, epoch, step); checkpoints go to `run_dir` (default:
    ``checkpoint_dir()/<dataset>-<arch>-parityK<K>``). `subset` trains on the first n training images, `stop_after`
    stops after that many global steps as if interrupted. `warm_start` (when no checkpoint is resumed) starts from the
    shipped parity model, trained for an earlier base model, and keeps what its card says in ``state["warm_start"]``.
    Returns the model and its state (history, elapsed, ...).
    """
    K = _check(dataset, arch, K)
    base_arch = base_arch or arch
    _check(dataset, base_arch, K)
    recipe = recipe or parity_recipe_for(dataset, arch)
    dev = inference.pick_device(device)
    run_dir = Path(run_dir or train.checkpoint_dir() / f"{dataset}-{parity_name(arch, K)}")
    base = serving.served(dataset, base_arch, device)  # sha256-verified; ModelError when missing
    torch.manual_seed(recipe.seed)

    x, _ = data.load(dataset, "train")
    x = data.to_tensor(x[:subset], dataset)
    targets = torch.from_numpy(train_outputs(base, len(x), progress=progress))
    n, B = len(x), recipe.batch_size

    model = models.build(arch, dataset).to(dev).to(memory_format=torch.channels_last)
    meta = {"K": K, "base_arch": base_arch, "base_sha256": base.fingerprint, "subset": subset, "grad_clip": GRAD_CLIP}
    opt, state = train.start(model, recipe, run_dir, resume, meta, what="recipe, K, subset or base model")
    if warm_start and state["step"] == 0:
        state["warm_start"] = _warm_parity(model, dataset, arch, K)

    @lru_cache(maxsize=1)
    def orders(epoch: int) -> torch.Tensor:  # K independent permutations: parity sample s sums images orders[s, :]
        gens = (train._generator(recipe.seed, epoch, k, 2) for k in range(K))
        return torch.stack([torch.randperm(n, generator=g) for g in gens], dim=1)

    def batch(epoch: int, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = orders(epoch)[i * B : (i + 1) * B]  # (b, K)
        xb = train.augment(x[idx.ravel()], recipe, train._generator(recipe.seed, epoch, i, 1))
        return xb.view(len(idx), K, *xb.shape[1:]).sum(dim=1), targets[idx].sum(dim=1)

    # this call's per-step training losses (not checkpointed)
    state["losses"] = train.fit(
        model, opt, state, recipe, steps_per_epoch=math.ceil(n / B), batch=batch, loss_fn=F.mse_loss,
        on_epoch=lambda m: evaluate_parity(m, base, K, dev, n_test=None if subset is None else 200),
        run_dir=run_dir, device=dev, stop_after=stop_after, clip=GRAD_CLIP, desc=f"{dataset}/{parity_name(arch, K)}",
        progress=progress,
    )  # fmt: skip
    return model.eval(), state


def _warm_parity(model: nn.Module, dataset: str, arch: str, K: int) -> dict:
    """Load the shipped parity model into `model`; what its card says of it (the base model it was trained for)."""
    card = load_parity_card(dataset, arch, K)
    model.load_state_dict(load_parity(dataset, arch, K).state_dict())
    path = models.weights_path(dataset, arch, parity_variant(K))
    print(f"warm start: from {path} ({card['epochs']} epochs)", file=sys.stderr)
    kept = (*train.WARM_START_FIELDS, "base_sha256", "epochs", "degraded_accuracy")
    return {k: card[k] for k in kept if k in card}


def finish_parity(model: nn.Module, dataset: str, arch: str, K: int, state: dict, device: str, command: str) -> dict:
    """Evaluate fp32 and fp16 weights on the whole test set; save (fp16 if the degraded-mode accuracy moves by at
    most 0.05 points) as ``models/<dataset>-<arch>-parityK<K>.*`` with a model card; return the card."""
    K = _check(dataset, arch, K)
    dev = inference.pick_device(device)
    base = serving.served(dataset, state["base_arch"], device)
    if base.fingerprint != state["base_sha256"]:
        raise models.ModelError(f"the base model {dataset}-{state['base_arch']} changed while the parity trained")
    model = model.float().to(memory_format=torch.contiguous_format)
    ev32 = evaluate_parity(model, base, K, dev)
    half = train.half_copy(model, arch, dataset).to(dev)
    ev16 = evaluate_parity(half, base, K, dev)
    use_half = abs(ev16["degraded_accuracy"] - ev32["degraded_accuracy"]) <= 0.0005
    served_ev = ev16 if use_half else ev32  # the stored weights, as served
    base_card = models.load_card(dataset, state["base_arch"])
    card = {
        "dataset": dataset,
        "arch": arch,
        "kind": "ParM parity model (r = 1): sum encoder on normalised queries, MSE to the sum of base logits",
        "K": K,
        "base_arch": state["base_arch"],
        "base_sha256": state["base_sha256"],
        "base_test_accuracy": base_card.get("test_accuracy"),
        "degraded_accuracy": served_ev["degraded_accuracy"],
        "degraded_accuracy_fp32": ev32["degraded_accuracy"],
        "test_mse": served_ev["test_mse"],
        "test_mse_fp32": ev32["test_mse"],
        "subset": state.get("subset"),
        **train.run_record(state, dev, command),
        **({"warm_start": state["warm_start"]} if "warm_start" in state else {}),
    }
    return models.save(model, dataset, arch, card, half=use_half, variant=parity_variant(K))


# ---------------------------------------------------------------- trained parity models


def parity_variant(K: int) -> str:
    """The file suffix of a parity model in `models/`: ``<dataset>-<arch>-parityK<K>.*``."""
    return f"-parityK{K}"


def load_parity_card(dataset: str, arch: str, K: int) -> dict:
    """The parity model's card; `ModelError` naming the command that trains it when it is missing."""
    K = _check(dataset, arch, K)
    return models.load_card(dataset, arch, variant=parity_variant(K), command=_train_command(dataset, arch, K))


def parity_training(card: dict) -> dict:
    """How long a parity model trained, over its whole chain of warm starts: `epochs` and `train_min` (wall time in
    minutes), summed over the runs of the chain; `retargeted`, the epochs since its base model last changed (0 for a
    model trained from scratch for its base)."""
    epochs, seconds, run = 0, 0.0, card
    while run:
        epochs, seconds, run = epochs + run["epochs"], seconds + run["wall_time_s"], run.get("warm_start")
    return {"epochs": epochs, "train_min": seconds / 60, "retargeted": card["epochs"] if "warm_start" in card else 0}


def load_parity(dataset: str, arch: str, K: int, device: str | torch.device = "cpu") -> nn.Module:
    """The trained parity model in eval mode (float32), after checking its weights' sha256 against its card."""
    K = _check(dataset, arch, K)
    return models.load(dataset, arch, device, variant=parity_variant(K), command=_train_command(dataset, arch, K))


def _check_base(dataset: str, arch: str, K: int, card: dict) -> None:
    base_card = models.load_card(dataset, card["base_arch"])
    if base_card["weights_sha256"] != card["base_sha256"]:
        raise models.ModelError(
            f"the parity model {dataset}-{parity_name(arch, K)} was trained for another {dataset}-{card['base_arch']} "
            f"(sha256 {card['base_sha256'][:12]}..., now {base_card['weights_sha256'][:12]}...); retrain it with "
            f"`{_train_command(dataset, arch, K)}`"
        )


def served_parity(
    dataset: str, arch: str, K: int, device: str = "auto", precision: str = "fp32"
) -> serving.ServedModel:
    """The parity model as a black box (the same predictor as every served model), checked against its base."""
    card = load_parity_card(dataset, arch, K)
    _check_base(dataset, arch, K, card)
    dev = inference.pick_device(device)
    model = load_parity(dataset, arch, K, dev)
    name = f"{dataset}-{parity_name(arch, K)}"
    precision = serving.resolve_precision(precision, dev)
    predict = serving.torch_predictor(model, dev, precision=precision)
    return serving.ServedModel(name, dataset, card["weights_sha256"], predict, str(dev), precision)


def parity_outputs(
    parity: serving.ServedModel, K: int, *, seed: int = 0, n_test: int | None = None, progress: bool = False
) -> np.ndarray:
    """The parity model's outputs on the sum of each test group's K queries (the groups of `test_groups`), (G, C).
    Cached per (parity model, K, seed, n_test)."""
    groups = experiments.test_groups(parity.dataset, K, seed=seed, n_test=n_test)
    key = f"{parity.name}-s{seed}-n{groups.size}-{parity.cache_tag}-v{CACHE_VERSION}"
    path = experiments.cache_dir() / "parity" / f"{key}.npz"
    entry = cache.load_npz(path, {"out": (len(groups), len(data.info(parity.dataset).classes))}, finite=("out",))
    if entry:
        return entry["out"]
    parts = []
    starts = range(0, len(groups), 500)
    for s in tqdm(starts, desc=f"{parity.name} parity outputs", disable=not progress or len(starts) < 2):
        parts.append(parity.predict(_summed_queries(parity.dataset, groups[s : s + 500])))
    out = np.concatenate(parts)
    cache.save_npz(path, out=out)
    return out


# ---------------------------------------------------------------- rounds


@dataclass
class ParmRounds:
    """One straggler per round, the same for both schemes: ParM's and ApproxIFER's outputs, and the truth."""

    K: int
    labels: np.ndarray  # (R, K)
    straggler: np.ndarray  # (R,) worker that did not return: 0..K-1 base workers, K the parity worker
    parm: np.ndarray  # (R, K, C) ParM's outputs (exact, except the reconstructed query)
    approxifer: np.ndarray  # (R, K, C) ApproxIFER's decoded outputs, N = K + 1, S = 1
    base: np.ndarray  # (R, K, C) the base model on the queries
    lost: np.ndarray  # (R,) ApproxIFER's lost query: the one the straggling worker carries most (lost_mask)
    clusters: np.ndarray  # (R,) the image group of each round (the resampling unit when draws > 1)

    @property
    def degraded(self) -> np.ndarray:
        """Rounds where a base worker straggled (ParM reconstructs a query)."""
        return self.straggler < self.K

    def correct(self, scheme: str) -> dict[str, np.ndarray]:
        """Which outputs of `scheme` (parm, approxifer, base) are right, by metric (rows are rounds):

        - ``lost`` (D, 1): in each of the D rounds where a base worker straggled, the query that lost its worker —
          ParM's reconstructed query (the straggler's own), ApproxIFER's lost query (`lost`);
        - ``lost_all`` (R, 1): the same query in every round (for ParM, rounds where its parity worker straggled
          lose nothing and count as right when the base model is);
        - ``degraded_rounds`` (D, K): all K queries of the D rounds;
        - ``all`` (R, K): all K queries of every round.
        """
        ok = getattr(self, scheme).argmax(-1) == self.labels
        d = np.flatnonzero(self.degraded)
        query = self.lost if scheme == "approxifer" else np.minimum(self.straggler, self.K - 1)
        lost_all = ok[np.arange(len(ok)), query][:, None]
        return {"lost": lost_all[d], "lost_all": lost_all, "degraded_rounds": ok[d], "all": ok}


def parm_round(wo: WorkerOutputs, parity: np.ndarray, *, draws: int = 1, seed: int = 0) -> ParmRounds:
    """ParM and ApproxIFER on the rounds of `wo` (K queries, N = K + 1 workers), one straggler per round.

    The draws are `experiments.straggler_table`'s: ``draw_returned(G * draws, K + 1, 1, default_rng([seed, K, N]))``,
    so ApproxIFER's outputs here are exactly those behind its straggler table, and ParM's missing worker is
    ApproxIFER's missing worker in every round (worker j < K: query j's base worker; worker K: the parity worker).
    """
    K, N = wo.K, wo.N
    if N != K + 1:
        raise ParameterError(f"ParM with one parity has N = K + 1 workers; these worker outputs have K={K}, N={N}")
    draws = experiments._int("draws", draws, 1)
    if parity.shape != (wo.G, wo.base.shape[2]):
        raise ParameterError(f"parity outputs {parity.shape} do not match the {wo.G} groups of these worker outputs")
    rng = np.random.default_rng([seed, K, N])
    returned = experiments.draw_returned(wo.G * draws, N, 1, rng)
    straggler = N * (N - 1) // 2 - returned.sum(axis=1)  # the one index missing from 0..N-1
    lost = experiments.lost_mask(codec.encoder_matrix(K, N, wo.points), returned).argmax(axis=1)
    tile = lambda a: experiments.tile_draws(a, draws)  # noqa: E731
    base, labels = tile(wo.base), tile(wo.labels)
    return ParmRounds(
        K=K,
        labels=labels,
        straggler=straggler,
        parm=reconstruct(tile(parity), base, straggler),
        approxifer=experiments.decode_groups(tile(wo.coded), returned, K, N, points=wo.points),
        base=base,
        lost=lost,
        clusters=tile(np.arange(wo.G)),
    )


METRICS = ("lost", "lost_all", "degraded_rounds", "all")


def parm_table(rounds: list[ParmRounds]) -> pd.DataFrame:
    """One row per K: accuracy with 95 % CIs of ParM, ApproxIFER and the base model on each metric of
    `ParmRounds.correct` (columns ``<scheme>_<metric>``, ``..._low``, ``..._high``), and the paired gaps
    ApproxIFER - ParM over the same rounds (``gap_<metric>``, bootstrapped by image group)."""
    rows = []
    for r in rounds:
        row = {"K": r.K, "N": r.K + 1, "rounds": len(r.labels), "n_degraded": int(r.degraded.sum())}
        ok = {scheme: r.correct(scheme) for scheme in ("parm", "approxifer", "base")}
        cl = {"lost": r.clusters[r.degraded], "degraded_rounds": r.clusters[r.degraded]}
        for metric in METRICS:
            clusters = cl.get(metric, r.clusters)
            for scheme, metrics in ok.items():
                row |= _ci_row(f"{scheme}_{metric}", experiments.accuracy_ci(metrics[metric], clusters=clusters))
            gap = experiments.paired_ci(ok["approxifer"][metric], ok["parm"][metric], clusters=clusters)
            row |= _ci_row(f"gap_{metric}", gap)
        rows.append(row)
    return pd.DataFrame(rows)


def _ci_row(name: str, values: tuple[float, float, float]) -> dict:
    return dict(zip((name, f"{name}_low", f"{name}_high"), values, strict=True))


def by_straggler(rounds: list[ParmRounds]) -> pd.DataFrame:
    """Per straggling worker: both schemes over the K queries of its rounds, and each scheme's lost query — for
    ApproxIFER the query that worker carries most (and, as a reference, query j = the worker's index, the pairing
    an earlier version used, and the worst query of those rounds)."""
    rows = []
    for r in rounds:
        parm, apx = (r.correct(s)["all"] for s in ("parm", "approxifer"))
        for w in range(r.K + 1):
            m = r.straggler == w
            if not m.any():  # a worker that never straggled in these rounds (few rounds)
                continue
            lost = int(np.bincount(r.lost[m]).argmax())
            rows.append({
                "K": r.K, "straggler": w, "rounds": int(m.sum()),
                "ParM": parm[m].mean(), "ApproxIFER": apx[m].mean(),
                "ParM, lost query": parm[m, w].mean() if w < r.K else np.nan,
                "ApproxIFER's lost query": lost, "ApproxIFER, lost query": apx[m, lost].mean(),
                "ApproxIFER, query j = worker": apx[m, w].mean() if w < r.K else np.nan,
                "ApproxIFER, worst query": apx[m].mean(axis=0).min(),
            })  # fmt: skip
    return pd.DataFrame(rows).set_index(["K", "straggler"])


def _fmt(r, name: str, signed: bool = False) -> str:
    from approxifer.report import ci_text

    return ci_text(getattr(r, name), getattr(r, f"{name}_low"), getattr(r, f"{name}_high"), signed=signed)


def comparison(results: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Two tables, one row per (dataset, K), 95 % CIs beside [P]'s values: ``lost``, the query each round lost
    (ParM's reconstruction, ApproxIFER's decoded guess), and ``all``, all queries of every round."""
    from approxifer import anchors
    from approxifer.report import NAMES

    lost, every = [], []
    for dataset, df in results.items():
        for r in df.itertuples():
            P = anchors.PARM.get(r.K, {}).get(dataset)
            index = {"dataset": NAMES[dataset], "K": r.K}
            lost.append(index | {"ParM, reconstructed": _fmt(r, "parm_lost"), "ApproxIFER, lost": _fmt(
                r, "approxifer_lost"), "[P] ParM": "–" if P is None else f"{P[1]:.3f}"})  # fmt: skip
            every.append(index | {"ParM": _fmt(r, "parm_all"), "ApproxIFER": _fmt(r, "approxifer_all"),
                                  "[P] ApproxIFER": "–" if P is None else f"{P[0]:.3f}"})  # fmt: skip
    return {"lost": pd.DataFrame(lost).set_index(["dataset", "K"]),
            "all": pd.DataFrame(every).set_index(["dataset", "K"])}  # fmt: skip


def gaps(results: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """ApproxIFER - ParM, paired over the same rounds (95 % CIs): on the query each round lost, on all K queries of
    those rounds, on all queries of every round; and [P]'s convention, ApproxIFER over all rounds minus ParM's
    degraded-mode accuracy (no CI: two different metrics), beside [P]'s gap."""
    from approxifer import anchors
    from approxifer.report import NAMES

    rows = []
    for dataset, df in results.items():
        for r in df.itertuples():
            P = anchors.PARM.get(r.K, {}).get(dataset)
            rows.append({
                "dataset": NAMES[dataset], "K": r.K,
                "lost query": _fmt(r, "gap_lost", signed=True),
                "all K, same rounds": _fmt(r, "gap_degraded_rounds", signed=True),
                "all queries": _fmt(r, "gap_all", signed=True),
                "[P]'s convention": f"{r.approxifer_all - r.parm_lost:+.3f}",
                "[P]": "–" if P is None else f"{P[0] - P[1]:+.3f}",
            })  # fmt: skip
    return pd.DataFrame(rows).set_index(["dataset", "K"])


# ---------------------------------------------------------------- notebook parameters


def check_params(
    *,
    datasets,
    arch: str,
    Ks,
    n_test: int | None = None,
    draws: int = 1,
    device: str = "auto",
    precision: str = "fp32",
) -> dict[str, list[int]]:
    """Validate the ParM notebook's parameters, then that every (dataset, K) has its base and parity model; return
    the Ks of each dataset. `Ks` is one list for every dataset, or a mapping ``{dataset: [K, ...]}`` over `datasets`
    (parity models are trained per (dataset, K), so not every K need exist for every dataset)."""
    experiments.check_params(
        datasets=datasets, arch=arch, n_test=n_test, draws=draws, device=device, precision=precision
    )
    datasets = list(datasets)
    if isinstance(Ks, dict):
        if set(Ks) != set(datasets):
            raise ParameterError(f"Ks is a mapping, so its keys must be the datasets {datasets}, got {list(Ks)}")
        per = {d: Ks[d] for d in datasets}
    else:
        per = dict.fromkeys(datasets, Ks)
    for d, ks in per.items():
        if isinstance(ks, str | int) or not list(ks):
            raise ParameterError(f"Ks must be a non-empty list of integers >= 2 (or one per dataset), got {ks!r}")
        per[d] = [_check(d, arch, K) for K in ks]
        for K in per[d]:
            if n_test is not None and n_test < K:
                raise ParameterError(f"n_test={n_test} is smaller than one group of K={K} queries")
    for d, ks in per.items():
        models.load_card(d, arch)
        for K in ks:
            _check_base(d, arch, K, load_parity_card(d, arch, K))
    return per


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    import argparse

    p = argparse.ArgumentParser(
        prog="approxifer train-parity",
        description="Train a ParM parity model (r = 1) and write models/<dataset>-<arch>-parityK<K>.*",
    )
    p.add_argument("dataset", choices=list(data.DATASETS))
    p.add_argument("arch", choices=list(models.ARCHS))
    p.add_argument("K", type=int, help="queries summed into one parity query (>= 2)")
    p.add_argument("--base-arch", help="the trained base model (default: the parity model's arch)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--device", default="auto")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    p.add_argument(
        "--warm-start", action="store_true", help="start from the shipped parity model (e.g. after the base changed)"
    )
    a = p.parse_args(argv)
    try:
        _check(a.dataset, a.arch, a.K)
        recipe = parity_recipe_for(a.dataset, a.arch, epochs=a.epochs, batch_size=a.batch_size, lr=a.lr, seed=a.seed)
        model, state = train_parity(
            a.dataset, a.arch, a.K, a.base_arch, recipe, device=a.device, resume=a.resume, warm_start=a.warm_start
        )
    except (ValueError, models.ModelError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    command = "approxifer train-parity " + shlex.join(argv if argv is not None else sys.argv[1:])
    card = finish_parity(model, a.dataset, a.arch, a.K, state, a.device, train.recorded_command(command, state))
    keys = ("dataset", "arch", "K", "degraded_accuracy", "test_mse", "weights_dtype", "wall_time_s")
    print(json.dumps({k: card[k] for k in keys}))
