"""The published-run record: what `approxifer notebooks` stores in each executed notebook, and the appendix's table."""

import json

import nbformat
import pytest
import torch

from approxifer import cli, inference
from approxifer import reproducibility as rp


def test_execution_record_resolves_precision_on_this_machine():
    auto = rp.execution_record({"device": "cpu", "precision": "auto"})
    assert auto["precision"] == ("bf16" if inference.native_bf16(torch.device("cpu")) else "fp32")
    assert auto["gpu"] is None and auto["cores"] >= 1 and auto["cpu"]
    assert rp.execution_record({"precision": "fp32"})["precision"] == "fp32"
    assert rp.execution_record({"n_test": 10})["precision"] is None  # a notebook that serves no model
    with pytest.raises(ValueError, match="unknown precision"):
        rp.execution_record({"precision": "fp16"})


def test_run_notebooks_records_the_run_and_published_runs_reads_it(tmp_path):
    src, out = tmp_path / "src", tmp_path / "book"
    src.mkdir(), out.mkdir()
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('precision = "fp32"\ndevice = "cpu"')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [
        nbformat.v4.new_markdown_cell("# A chapter\n\ntext"),
        params,
        nbformat.v4.new_code_cell("print(precision)"),
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, src / "demo.ipynb")
    (tmp_path / "params.yml").write_text("demo:\n  precision: auto\n")
    cli.run_notebooks(["--params", str(tmp_path / "params.yml"), "--src", str(src), "--out", str(out)])

    executed = json.loads((out / "demo.ipynb").read_text())
    assert executed["metadata"]["approxifer"] == rp.execution_record({"precision": "auto"})
    assert executed["cells"][-1]["outputs"][0]["text"] == ["auto\n"]  # the published parameters were injected
    injected = [c for c in executed["cells"] if "injected-parameters" in c["metadata"].get("tags", [])]
    assert len(injected) == 1 and "hide-input" in injected[0]["metadata"]["tags"]  # behind a toggle in the book

    old = nbformat.v4.new_notebook()  # executed before the record existed
    old.metadata["papermill"] = {"end_time": "2026-12-01T09:35:00.1+00:00", "duration": 30.0}
    nbformat.write(old, out / "old.ipynb")
    running = nbformat.v4.new_notebook()
    running.metadata["papermill"] = {"end_time": None, "duration": None}
    nbformat.write(running, out / "running.ipynb")
    table = rp.published_runs(out)
    assert list(table.index) == ["A chapter", "old"]  # by title; notebooks without one by their file name
    assert table.loc["A chapter", "precision"] == rp.execution_record({"precision": "auto"})["precision"]
    assert table.loc["old", "precision"] == "not recorded" and table.loc["old", "minutes"] == 0.5
    assert table.loc["old", "executed (UTC)"] == "2026-12-01 09:35"


def test_model_cards_table_is_compact_and_commands_are_whole():
    cards, commands = rp.model_cards(), rp.model_commands()
    assert list(cards.index) == list(commands.index) and len(cards) > 0
    assert "command" not in cards.columns and set(cards.kind) <= {"base", "parity", "classical"}
    card = json.loads((rp.models.models_dir() / "cifar10-resnet18.json").read_text())
    assert commands.loc["cifar10-resnet18", "command"] == card["command"]  # not truncated
    assert cards.loc["mnist-resnet18-seed1", "seed"] == 1 and cards.accuracy.round(4).equals(cards.accuracy)


def test_data_table_is_compact_and_licences_are_separate():
    table = rp.datasets()
    assert "licence" not in table.columns and table["images sha256"].str.len().max() <= 13
    assert set(rp.licences().index) == set(table.index.get_level_values("dataset"))


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_prints_the_usage_and_exits_0(flag, capsys):
    import subprocess
    import sys

    cli.main([flag])  # returns: exit status 0
    assert capsys.readouterr().out.startswith("usage: approxifer {data,train,")
    run = subprocess.run([sys.executable, "-m", "approxifer.cli", flag], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and run.stdout.startswith("usage: approxifer")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (None, r"error: cannot read the parameter file .*params\.yml: \[Errno 2\] No such file"),
        ("demo: [unclosed", r"error: cannot read the parameter file .*params\.yml: while parsing a flow sequence"),
        ("- demo\n- other\n", r"error: .*params\.yml must map notebook names to parameters \(name: \{param: value\}\)"),
        ("demo: 3\n", r"must map notebook names to parameters"),
    ],
)
def test_notebooks_with_a_missing_or_malformed_parameter_file(tmp_path, text, match):
    if text is not None:
        (tmp_path / "params.yml").write_text(text)
    with pytest.raises(SystemExit, match=match):
        cli.run_notebooks(["--params", str(tmp_path / "params.yml"), "--src", str(tmp_path), "--out", str(tmp_path)])
