from __future__ import annotations

from approxifer import anchors, report


def test_verdict_reads_the_confidence_interval():
    assert report.verdict(0.86, 0.85, 0.87, 0.872).startswith("lower than published by 0.012")
    assert report.verdict(0.86, 0.85, 0.87, 0.86).startswith("reproduced")
    assert report.verdict(0.86, 0.85, 0.87, None) == "no published value"


def test_baseline_verdict_places_each_baseline_against_the_interval():
    v = report.baseline_verdict(0.80, 0.78, 0.82, {"replication": 0.90, "uncoded": 0.79, "other": 0.5})
    assert v == "replication beats ApproxIFER; uncoded matches ApproxIFER; other loses to ApproxIFER"


def test_published_model_table_has_every_column():
    assert {"VGG16", "ResNet34"} <= set(anchors.MODELS)
    assert all(set(row) == {"base", "stragglers", "Byzantine E=2"} for row in anchors.MODELS.values())
