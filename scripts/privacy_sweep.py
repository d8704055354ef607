"""Rebuild the zoo run `private_digits`: chapter 7's private training runs and their membership scores.

DP-SGD (Opacus) on scikit-learn's digits with the MNIST model `mnist8_cnn` as the
public starting point: scratch, fine-tuning (BatchNorm swapped for GroupNorm, or
frozen), and the head alone, each at several epsilons and without privacy, 8 models
per setting on balanced halves of a membership pool (see tu.privacy_sweep). The
chapter loads the result instead of waiting.

The shipped run used a cut grid (the full default grid takes about 50 minutes on a
loaded 2-core machine); its exact command is in transfer_utils/zoo/runs/private_digits.json:

    python scripts/privacy_sweep.py --methods scratch "fine-tune, BatchNorm frozen" \
        "head only" --epsilons 1 8 inf --lrs 1e-3 3e-3 1e-2   # about 25 minutes
    python scripts/privacy_sweep.py            # the full default grid
    python scripts/privacy_sweep.py --quick    # a 1-minute smoke run, written nowhere
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import torch

import transfer_utils as tu

NAME = "private_digits"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="tiny settings to check the script runs; saves nothing")
    parser.add_argument("--methods", nargs="+", choices=tu.SWEEP_METHODS,
                        help="methods to run (default: all of tu.SWEEP_METHODS)")
    parser.add_argument("--epsilons", nargs="+", type=float,
                        help="target epsilons, 'inf' for no privacy (default 1 3 8 inf)")
    parser.add_argument("--lrs", nargs="+", type=float,
                        help="learning-rate grid (default 3e-4 1e-3 3e-3 1e-2)")
    args = parser.parse_args(argv)
    torch.set_num_threads(tu.default_threads())
    kwargs = {}
    command = ["python scripts/privacy_sweep.py"]
    if args.methods:
        kwargs["methods"] = tuple(args.methods)
        command.append("--methods " + " ".join(f'"{m}"' if " " in m else m
                                               for m in args.methods))
    if args.epsilons:
        kwargs["epsilons"] = tuple(args.epsilons)
        command.append("--epsilons " + " ".join(f"{e:g}" for e in args.epsilons))
    if args.lrs:
        kwargs["lrs"] = tuple(args.lrs)
        command.append("--lrs " + " ".join(f"{lr:g}" for lr in args.lrs))
    if args.quick:
        kwargs = dict(n_models=4, epsilons=(8.0, math.inf), epochs=1, lrs=(1e-3,),
                      pool_size=200, methods=("fine-tune, BatchNorm frozen", "head only"))
    t0 = time.perf_counter()
    record, tensors = tu.privacy_sweep(log=lambda line: print(line, flush=True), **kwargs)
    print(f"done in {time.perf_counter() - t0:.0f} s")
    if args.quick:
        return 0
    meta = tu.zoo.save_run(
        NAME, record, tensors, command=" ".join(command),
        description="Chapter 7: DP-SGD (Opacus) on scikit-learn digits from the public "
                    "mnist8_cnn: scratch, fine-tuning and the head alone (the methods of "
                    "the command) at several epsilons and without privacy; 8 models per setting "
                    "on balanced halves of a membership pool, with their test accuracy, the "
                    "accountant's epsilon and membership scores on every pool and test example.")
    print(f"saved {NAME}: sha256 {meta['sha256'][:12]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
