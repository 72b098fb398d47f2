"""The published numbers this project compares against (never our results): [P] the paper, [R] the report.

Source of every value: ``shared/reference/anchors.md`` — [P] values are those behind the paper's bar charts, as
published in the authors' plotting script; [R] values are from the reproducibility report's tables.
"""

from __future__ import annotations

__all__ = ["BASE", "BYZANTINE", "MODELS", "PARM", "RUNTIMES_R", "STRAGGLERS"]

# (K, S) -> {(source, dataset): accuracy}; straggler-only, ResNet-18
STRAGGLERS: dict[tuple[int, int], dict[tuple[str, str], float]] = {
    (8, 1): {("P", "mnist"): 0.872, ("P", "fashion-mnist"): 0.74, ("P", "cifar10"): 0.776,
             ("R", "mnist"): 0.88, ("R", "cifar10"): 0.83},
    (10, 1): {("P", "mnist"): 0.872, ("P", "fashion-mnist"): 0.73, ("P", "cifar10"): 0.774},
    (12, 1): {("P", "mnist"): 0.868, ("P", "fashion-mnist"): 0.72, ("P", "cifar10"): 0.774,
              ("R", "mnist"): 0.86, ("R", "cifar10"): 0.79},
    (8, 2): {("P", "mnist"): 0.8256, ("P", "fashion-mnist"): 0.6554, ("P", "cifar10"): 0.7405,
             ("R", "mnist"): 0.81, ("R", "cifar10"): 0.75},
    (8, 3): {("P", "mnist"): 0.7747, ("P", "fashion-mnist"): 0.64, ("P", "cifar10"): 0.7305,
             ("R", "mnist"): 0.77, ("R", "cifar10"): 0.70},
}  # fmt: skip

# Base-model accuracy, ResNet-18 ([P] F-MNIST is 0.97 in the straggler chart, 0.93 in the Byzantine chart).
BASE: dict[tuple[str, str], float] = {
    ("P", "mnist"): 0.99, ("P", "fashion-mnist"): 0.97, ("P", "cifar10"): 0.94,
    ("R", "mnist"): 0.99, ("R", "cifar10"): 0.94,
}  # fmt: skip

# ParM comparison [P], S = 1: K -> dataset -> (ApproxIFER, ParM)
PARM: dict[int, dict[str, tuple[float, float]]] = {
    8: {"mnist": (0.872, 0.6833), "fashion-mnist": (0.74, 0.6711), "cifar10": (0.776, 0.2539)},
    10: {"mnist": (0.872, 0.592), "fashion-mnist": (0.73, 0.59), "cifar10": (0.774, 0.2043)},
    12: {"mnist": (0.868, 0.5031), "fashion-mnist": (0.72, 0.5518), "cifar10": (0.774, 0.1921)},
}

# Byzantine-only, K = 12, S = 0, sigma = 1: E -> {(source, dataset): accuracy}
BYZANTINE: dict[int, dict[tuple[str, str], float]] = {
    1: {("P", "mnist"): 0.97, ("P", "fashion-mnist"): 0.79, ("P", "cifar10"): 0.8981,
        ("R", "mnist"): 0.98, ("R", "cifar10"): 0.91},
    2: {("P", "mnist"): 0.95, ("P", "fashion-mnist"): 0.805, ("P", "cifar10"): 0.8966,
        ("R", "mnist"): 0.97, ("R", "cifar10"): 0.90},
    3: {("P", "mnist"): 0.93, ("P", "fashion-mnist"): 0.82, ("P", "cifar10"): 0.901,
        ("R", "mnist"): 0.97, ("R", "cifar10"): 0.90},
}  # fmt: skip

# [R] runtimes on Google Colab, ResNet-18, S = 1: (dataset, K) -> (seconds per round, total seconds)
RUNTIMES_R: dict[tuple[str, int], tuple[float, float]] = {
    ("cifar10", 8): (0.298601, 28.967860), ("mnist", 8): (0.318697, 97.652539),
    ("cifar10", 12): (0.429150, 44.250905), ("mnist", 12): (0.447539, 143.729705),
}  # fmt: skip

# [P]'s model table, CIFAR-10: model -> base accuracy, ApproxIFER with one straggler (K = 10 in the authors' script,
# K = 8 in the caption), and with E = 2 Byzantine workers (K = 12, S = 0)
MODELS: dict[str, dict[str, float]] = {
    "VGG16": {"base": 0.94, "stragglers": 0.805, "Byzantine E=2": 0.90},
    "ResNet34": {"base": 0.9334, "stragglers": 0.812, "Byzantine E=2": 0.8933},
    "ResNet50": {"base": 0.9365, "stragglers": 0.801, "Byzantine E=2": 0.8993},
    "DenseNet161": {"base": 0.9407, "stragglers": 0.817, "Byzantine E=2": 0.9070},
    "GoogLeNet": {"base": 0.9285, "stragglers": 0.77, "Byzantine E=2": 0.8824},
}
