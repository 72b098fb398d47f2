"""The `approxifer` command: `approxifer data`, `approxifer train DATASET ARCH`, `approxifer bench codec`."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    commands = ("data", "train")
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


if __name__ == "__main__":
    main()
