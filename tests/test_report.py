from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from approxifer import anchors, report


def test_verdict_reads_the_confidence_interval():
    assert report.verdict(0.86, 0.85, 0.87, 0.872).startswith("lower than published by 0.012")
    assert report.verdict(0.86, 0.85, 0.87, 0.86).startswith("reproduced")
    assert report.verdict(0.86, 0.85, 0.87, None) == "no published value"


def test_models_verdict_reads_the_union_of_the_models_intervals():
    runs = [(0.86, 0.85, 0.87), (0.84, 0.83, 0.85), (0.875, 0.865, 0.885)]
    assert report.models_verdict(runs, 0.88) == (
        "reproduced (published value inside the 95 % CIs of our 3 trained models)",
        "✓ reproduced",
    )
    assert report.models_verdict(runs, 0.90) == (
        "lower than published by 0.025–0.060 over our 3 trained models",
        "below by 0.025–0.060",
    )
    assert report.models_verdict(runs, 0.80) == (
        "higher than published by 0.040–0.075 over our 3 trained models",
        "above by 0.040–0.075",
    )
    assert report.models_verdict(runs[:1], 0.90) == (report.verdict(*runs[0], 0.90), "below by 0.040")
    assert report.models_verdict(runs, None) == ("no published value", "–")


def test_paired_verdict_reads_the_interval_of_the_difference():
    v = report.paired_verdict({"replication": (0.03, 0.01, 0.05), "uncoded": (0.01, -0.01, 0.03),
                               "other": (-0.2, -0.25, -0.15)})  # fmt: skip
    assert v == ("replication beats ApproxIFER by 0.030; uncoded matches ApproxIFER (the 95 % CI of the difference "
                 "holds 0); other loses to ApproxIFER by 0.200")  # fmt: skip
    assert report.short_verdict(0.86, 0.85, 0.87, 0.86) == "✓ reproduced"
    assert report.short_verdict(0.86, 0.85, 0.87, 0.872) == "below by 0.012"
    assert report.short_verdict(0.86, 0.85, 0.87, None) == "–"


def test_cells_read_as_a_reader_reads_them():
    df = pd.DataFrame({"a": [0.12345, np.nan], "b": [True, False], "c": ["x", None]})
    out = report.readable(df)
    assert out.a.tolist() == ["0.123", "–"] and out.b.tolist() == ["✓", "✗"] and out.c.tolist() == ["x", "–"]
    assert report.ci_text(0.5, 0.4, 0.6) == "0.500 [0.400, 0.600]"
    assert report.ci_text(-0.1, -0.2, 0.05, signed=True) == "-0.100 [-0.200, +0.050]"
    assert report.ci_text(np.nan, np.nan, np.nan) == "–"


def test_figures_fit_the_column_and_are_not_pyplot_figures():
    fig, axes = report.figure(2, 2)
    assert axes.shape == (2, 2) and fig.get_figwidth() <= report.COLUMN_IN
    assert plt.get_fignums() == []  # nothing is shown until a cell asks for it
    with pytest.raises(ValueError, match="at most 2 panels"):
        report.figure(1, 3)
    diagram = report.method_diagram(4, 5, 2)
    widths = [line.get_linewidth() for line in diagram.axes[0].lines]
    assert len(widths) == 4 * 5 + 4 * 4  # every encoder edge, and decoder edges from the 4 returned workers only


def test_published_model_table_has_every_column():
    assert {"VGG16", "ResNet34"} <= set(anchors.MODELS)
    assert all(set(row) == {"base", "stragglers", "Byzantine E=2"} for row in anchors.MODELS.values())


def test_latex_tables_escape_and_never_start_a_line_with_a_bracket():
    df = pd.DataFrame({"95 % CI": ["0.5 [0.4, 0.6]"]}, index=pd.Index(["[0, 1)"], name="[P] runs"))
    tex = report.latex_table(df)
    assert "95 \\% CI" in tex and "{}[0, 1)" in tex and "{}[P] runs" in tex
    assert not any(line.startswith("[") for line in tex.splitlines())
