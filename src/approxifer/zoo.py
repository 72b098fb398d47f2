"""Every kind of model by name, as the same black box: `get(dataset, name)` -> `ServedModel`.

Neural networks (`models.ARCHS`, trained by ``approxifer train``) are served by `serving.served`; the non-neural
classifiers (`classical.NAMES`, fitted by ``approxifer fit-classical``) by `classical.load`. The experiment engine
sees only `predict(batch) -> scores`, whichever kind it is.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from approxifer import classical, models, serving
from approxifer.errors import ParameterError
from approxifer.serving import ServedModel

__all__ = ["check_names", "check_trained", "get", "kind", "known", "pairs"]


def known() -> dict[str, str]:
    """Every model name -> its kind ('neural' or 'classical')."""
    return {**dict.fromkeys(models.ARCHS, "neural"), **dict.fromkeys(classical.NAMES, "classical")}


def kind(name: str) -> str:
    check_names([name])
    return known()[name]


def check_names(names: Iterable[str]) -> list[str]:
    """Raise one `ParameterError` naming the unknown models and listing the known ones; return the names."""
    if isinstance(names, str):
        raise ParameterError(f"models must be a list of names, got the string {names!r}")
    names = list(names)
    bad = [n for n in names if n not in known()]
    if bad:
        raise ParameterError(
            f"unknown model{'s' * (len(bad) > 1)} {', '.join(map(repr, bad))}; known: neural "
            f"{', '.join(models.ARCHS)}; classical {', '.join(classical.NAMES)}"
        )
    if not names:
        raise ParameterError("models is empty: name at least one of " + ", ".join(known()))
    return names


def check_trained(datasets: Iterable[str], names: Iterable[str]) -> None:
    """Raise one `ParameterError` listing every requested (dataset, model) without a model card, with the command
    that makes each (the file's checksum is verified later, when the model is loaded)."""
    todo = []
    for d in datasets:
        for n in check_names(names):
            try:
                models.load_card(d, n) if kind(n) == "neural" else classical.load_card(d, n)
            except models.ModelError:
                todo.append(f"approxifer {'train' if kind(n) == 'neural' else 'fit-classical'} {d} {n}")
    if todo:
        raise ParameterError("not trained yet (run these, or drop them from the parameters): " + "; ".join(todo))


def pairs(datasets: Iterable[str], names: Iterable[str] | Mapping[str, Iterable[str]]) -> list[tuple[str, str]]:
    """The (dataset, model) pairs to serve: `names` is one list for every dataset, or a mapping dataset -> list
    (e.g. CNNs for CIFAR-10, classical models for the grey sets). Validated: known names, datasets of the mapping
    among `datasets`, every pair trained (one `ParameterError` listing what is missing)."""
    datasets = list(datasets)
    if isinstance(names, Mapping):
        extra = sorted(set(names) - set(datasets))
        missing = [d for d in datasets if d not in names]
        if extra or missing:
            raise ParameterError(
                f"models maps datasets {', '.join(names)} but datasets is {', '.join(datasets)}: "
                "give one list of models for every dataset, or a list shared by all"
            )
        per = {d: check_names(names[d]) for d in datasets}
    else:
        shared = check_names(names)
        per = dict.fromkeys(datasets, shared)
    for d, ns in per.items():
        check_trained([d], ns)
    return [(d, n) for d, ns in per.items() for n in ns]


def get(dataset: str, name: str, device: str = "cpu", precision: str = "fp32") -> ServedModel:
    """The trained (or fitted) model `name` for `dataset`, verified against its model card, as a black box
    (`precision` applies to neural models; the others run in float64/float32 on the CPU)."""
    if kind(name) == "neural":
        return serving.served(dataset, name, device, precision)
    return classical.load(dataset, name)
