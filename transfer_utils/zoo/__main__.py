"""Command line for the model zoo: `python -m transfer_utils.zoo list|build NAME...|verify`."""

from __future__ import annotations

import argparse

import torch

from ..runtime import default_threads
from . import available, build, info, load


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m transfer_utils.zoo", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="list the models and their recorded metrics")
    b = sub.add_parser("build", help="retrain models from their recipes and save them")
    b.add_argument("names", nargs="+")
    sub.add_parser("verify", help="load every model, checking its hash")
    args = parser.parse_args(argv)
    torch.set_num_threads(default_threads())  # read the way tu.setup reads it
    if args.cmd == "list":
        for name in available():
            print(f"{name:24s} {info(name).get('metrics', 'not built')}")
    elif args.cmd == "build":
        for name in args.names:
            recipe = build(name, progress=True)
            print(f"{name}: {recipe['metrics']} sha256={recipe['sha256'][:12]}")
    else:
        for name in available():
            load(name)
            print(f"{name}: ok")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
