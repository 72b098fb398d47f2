r"""Claim 1 — model-agnostic: one codec for every kind of model, and why some models interpolate better.

The tables here read only cached worker outputs (`experiments.WorkerOutputs`): the model itself is never looked at.
To explain the accuracy ratios we decode each model's outputs on the $N$ coded queries (all returned) and compare
them with the model's *own* outputs $f(X_j)$ on the real queries. With $E$ the encoder matrix (N, K) and $D$ the
decoder matrix (K, N), the decoded scores are $D f(EX)$, and their error splits exactly into two parts:

$$ D f(EX) - f(X) \;=\; \underbrace{D\,\big(f(EX) - E f(X)\big)}_{\text{the model's part}}
   \;+\; \underbrace{(DE - I)\, f(X)}_{\text{the codec's part}}. $$

The codec's part is Berrut's own error (encode, then decode, a function that is affine in the queries): it depends
on the model only through the outputs $f(X)$. The model's part is zero for a model that is affine in its input
(logistic regression's logits), and grows with the model's *non-linearity along the encoder*,
$f(EX) - E f(X)$: how far its output on a coded query (a mixture of the K queries) is from the same mixture of its
outputs. Every error is measured on scores centred over the classes (a constant added to every class changes no
argmax, and Berrut's weights sum to one, so it passes through) and relative to the mean norm of the centred
$f(X_j)$ in the round. Then, per query, the margin-normalised error
$\rho_j = 2 \lVert \hat f_j - f(X_j) \rVert_\infty / m_j$, with $m_j$ the gap between the two largest scores of
$f(X_j)$: when $\rho_j < 1$ the decoded argmax is certainly the model's own, so $\rho$ is comparable across models
whatever the scale of their scores. Also reported: the variation along the encoder's curve, the mean change of the
centred scores between neighbouring coded queries $u(\beta_i), u(\beta_{i+1})$ on the same relative scale.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from approxifer import codec
from approxifer.experiments import WorkerOutputs, fmt_ci, transform

__all__ = ["RHO_BINS", "interpolation", "rho_bins", "smoothness_table", "summary_table"]

RHO_BINS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, np.inf)


def _centred(a: np.ndarray) -> np.ndarray:
    return a - a.mean(-1, keepdims=True)


def interpolation(wo: WorkerOutputs, kind: str = "logits") -> dict[str, np.ndarray]:
    """Per query: the decoder's error on the model's own outputs (all N returned) split into the model's and the
    codec's parts, the margin-normalised error rho, and whether the argmax survives; per round: the variation along
    the encoder's curve. `kind` is what is interpolated: the raw scores (``logits``) or their softmax (``probs``)."""
    F = transform(wo.base.astype(np.float64), kind)  # (G, K, C)
    Y = transform(wo.coded.astype(np.float64), kind)  # (G, N, C)
    E = codec.encoder_matrix(wo.K, wo.N)
    D = codec.decoder_matrix(wo.K, wo.N, range(wo.N))
    EF = np.einsum("ij,gjc->gic", E, F)  # what an affine model would return on the coded queries
    dec = np.einsum("ji,gic->gjc", D, Y)
    scale = np.linalg.norm(_centred(F), axis=-1).mean(1, keepdims=True)  # (G, 1)
    size = lambda a: np.linalg.norm(_centred(a), axis=-1) / scale  # noqa: E731
    top2 = np.sort(F, -1)[..., -2:]
    margin = top2[..., 1] - top2[..., 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = np.where(margin > 0, 2 * np.abs(dec - F).max(-1) / margin, np.inf)
    return {
        "nonlinearity": size(Y - EF).ravel(),  # per coded query
        "model part": size(np.einsum("ji,gic->gjc", D, Y - EF)).ravel(),
        "codec part": size(np.einsum("ji,gic->gjc", D, EF) - F).ravel(),
        "error": size(dec - F).ravel(),
        "rho": rho.ravel(),
        "agree": (dec.argmax(-1) == F.argmax(-1)).ravel(),
        "correct": (dec.argmax(-1) == wo.labels).ravel(),
        "base_correct": (F.argmax(-1) == wo.labels).ravel(),
        "curve variation": size(np.diff(Y, axis=1)).mean(1),  # per round
    }


def summary_table(
    strag: dict[tuple[str, str], pd.DataFrame], byz: dict[tuple[str, str], pd.DataFrame], info: dict[str, dict]
) -> pd.DataFrame:
    """One row per (dataset, model): base and ApproxIFER accuracy (95 % CI) and ApproxIFER / base, for every
    straggler configuration and every Byzantine locator."""
    rows = []
    for (d, m), st in strag.items():
        b = st.iloc[0]
        row = {"dataset": d, "model": m, **info[m], "base [95% CI]": fmt_ci(b.base, b.base_low, b.base_high)}
        for r in st.itertuples():
            row[f"K={r.K} S={r.S} [95% CI]"] = fmt_ci(r.accuracy, r.ci_low, r.ci_high)
            row[f"K={r.K} S={r.S} / base"] = round(r.accuracy / r.base, 3)
        bt = byz[d, m]
        for r in bt[~bt.method.isin(["none", "oracle"])].itertuples():
            key = f"E={r.E} {r.method}"
            row[f"{key} [95% CI]"] = fmt_ci(r.accuracy, r.ci_low, r.ci_high)
            row[f"{key} / base"] = round(r.accuracy / r.base, 3)
        rows.append(row)
    return pd.DataFrame(rows).set_index(["dataset", "model"])


def smoothness_table(outputs: dict[tuple[str, str, int, int], WorkerOutputs], scores: dict[str, str]) -> pd.DataFrame:
    """One row per (dataset, model, K, N), medians over queries: the non-linearity along the encoder, the decoding
    error and its two parts, the variation along the curve, rho and the share of queries with rho < 1 (a certified
    argmax), agreement with the model's own argmax, and decoded accuracy / base; for models whose scores are logits,
    the non-linearity, error and agreement again when their softmax probabilities are interpolated instead."""
    rows = []
    for (d, m, K, N), wo in outputs.items():
        s = interpolation(wo, "logits")
        row = {"dataset": d, "model": m, "K": K, "N": N, "scores": scores[m]}
        row |= {k: float(np.median(s[k])) for k in ("nonlinearity", "model part", "codec part", "error")}
        row |= {
            "curve variation": float(np.median(s["curve variation"])),
            "median rho": float(np.median(s["rho"])),
            "rho < 1": float(np.mean(s["rho"] < 1)),
            "agree": float(np.mean(s["agree"])),
            "decoded acc / base": float(np.mean(s["correct"]) / np.mean(s["base_correct"])),
        }
        if scores[m] == "logits":
            p = interpolation(wo, "probs")
            row |= {
                "nonlinearity (probs)": float(np.median(p["nonlinearity"])),
                "error (probs)": float(np.median(p["error"])),
                "agree (probs)": float(np.mean(p["agree"])),
            }
        rows.append(row)
    return pd.DataFrame(rows).set_index(["dataset", "model", "K", "N"])


def rho_bins(outputs: dict[tuple[str, str, int, int], WorkerOutputs], bins=RHO_BINS) -> pd.DataFrame:
    """How often the decoded argmax is the model's own (and right), by margin-normalised error rho, pooled over
    every model and configuration given, with each model's agreement beside."""
    parts = []
    for (_, m, _, _), wo in outputs.items():
        s = interpolation(wo, "logits")
        parts.append(pd.DataFrame({"model": m, "rho": s["rho"], "agree": s["agree"], "correct": s["correct"]}))
    df = pd.concat(parts, ignore_index=True)
    labels = [f"[{lo:g}, {hi:g})" for lo, hi in itertools.pairwise(bins)]
    df["rho bin"] = pd.cut(df["rho"], list(bins), right=False, labels=labels)
    pooled = df.groupby("rho bin", observed=False).agg(
        queries=("agree", "size"), agree=("agree", "mean"), correct=("correct", "mean")
    )
    pooled["share"] = pooled["queries"] / pooled["queries"].sum()
    per_model = df.pivot_table(index="rho bin", columns="model", values="agree", aggfunc="mean", observed=False)
    per_model = per_model[list(dict.fromkeys(df["model"]))]
    return pd.concat({"all models": pooled, "agree, per model": per_model}, axis=1)
