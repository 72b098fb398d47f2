"""The `approxifer` command: `data`, `train DATASET ARCH`, `train-parity DATASET ARCH K`, `fit-classical DATASET NAME`,
`notebooks`, `serve-bench ...`."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    commands = ("data", "train", "train-parity", "fit-classical", "notebooks", "serve-bench")
    if argv[:1] in (["-h"], ["--help"]):
        print(f"usage: approxifer {{{','.join(commands)}}} ...\n\n{__doc__}")
        return
    if not argv or argv[0] not in commands:
        print(f"usage: approxifer {{{','.join(commands)}}} ...", file=sys.stderr)
        raise SystemExit(2)
    command, rest = argv[0], argv[1:]
    if command == "data":
        from approxifer import data

        names = rest or list(data.DATASETS)
        for name in names:
            try:
                print(f"{name}: verified, cached in {data.prepare(name)}")
            except (ValueError, data.DataError) as e:
                print(f"error: {e}", file=sys.stderr)
                raise SystemExit(1) from None
    elif command == "train":
        from approxifer import train

        train.main(rest)
    elif command == "train-parity":
        from approxifer import baselines

        baselines.main(rest)
    elif command == "fit-classical":
        from approxifer import classical

        classical.main(rest)
    elif command == "notebooks":
        run_notebooks(rest)
    elif command == "serve-bench":
        from approxifer.cluster import bench

        bench.main(rest)


def run_notebooks(argv: list[str]) -> None:
    """Execute notebooks/<name>.ipynb with the published parameters into the book's source tree."""
    import argparse
    from pathlib import Path

    import nbformat
    import papermill
    import yaml

    from approxifer import reproducibility

    p = argparse.ArgumentParser(prog="approxifer notebooks", description=run_notebooks.__doc__)
    p.add_argument("names", nargs="*", help="notebooks to run (default: every one in the parameter file)")
    p.add_argument("--params", default="book/params.yml", help="YAML: notebook name -> parameters")
    p.add_argument("--src", default="notebooks")
    p.add_argument("--out", default="book")
    a = p.parse_args(argv)
    try:
        params = yaml.safe_load(Path(a.params).read_text()) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise SystemExit(f"error: cannot read the parameter file {a.params}: {e}") from None
    if not isinstance(params, dict) or not all(isinstance(v, dict | None) for v in params.values()):
        raise SystemExit(f"error: {a.params} must map notebook names to parameters (name: {{param: value}})")
    unknown = [n for n in a.names if n not in params]
    if unknown:
        raise SystemExit(f"error: {', '.join(unknown)} not in {a.params}; known: {', '.join(params)}")
    for name in a.names or list(params):
        src, out = Path(a.src) / f"{name}.ipynb", Path(a.out) / f"{name}.ipynb"
        print(f"== {src} -> {out} with {params[name]}", flush=True)
        nb = papermill.execute_notebook(src, out, parameters=params[name] or {}, log_output=True, cwd=str(Path.cwd()))
        nb.metadata["approxifer"] = reproducibility.execution_record(params[name] or {})  # read by published_runs
        for cell in nb.cells:  # the parameters papermill injected: behind a toggle, like the defaults they override
            if "injected-parameters" in cell.metadata.get("tags", []):
                cell.metadata["tags"] = [*cell.metadata["tags"], "hide-input"]
        nbformat.write(nb, out)


if __name__ == "__main__":
    main()
