"""Rebuild the zoo run `private_digits`: chapter 7's private training runs and their membership scores.

DP-SGD (Opacus) on scikit-learn's digits with the MNIST model `mnist8_cnn` as the
public starting point: scratch, fine-tuning (BatchNorm swapped for GroupNorm, or
frozen), and the head alone, each at several epsilons and without privacy, 8 models
per setting on balanced halves of a membership pool (see tu.privacy_sweep). Takes
about 20 minutes of one CPU core; the chapter loads the result instead of waiting.

    python scripts/privacy_sweep.py            # writes transfer_utils/zoo/runs/private_digits.*
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
    args = parser.parse_args(argv)
    torch.set_num_threads(tu.default_threads())
    kwargs = {}
    if args.quick:
        kwargs = dict(n_models=4, epsilons=(8.0, math.inf), epochs=1, lrs=(1e-3,),
                      pool_size=200, methods=("fine-tune, BatchNorm frozen", "head only"))
    t0 = time.perf_counter()
    record, tensors = tu.privacy_sweep(log=lambda line: print(line, flush=True), **kwargs)
    print(f"done in {time.perf_counter() - t0:.0f} s")
    if args.quick:
        return 0
    meta = tu.zoo.save_run(
        NAME, record, tensors, command="python scripts/privacy_sweep.py",
        description="Chapter 7: DP-SGD (Opacus) on scikit-learn digits from the public "
                    "mnist8_cnn: scratch, fine-tuning (GroupNorm / BatchNorm frozen) and the "
                    "head alone at several epsilons and without privacy; 8 models per setting "
                    "on balanced halves of a membership pool, with their test accuracy, the "
                    "accountant's epsilon and membership scores on every pool and test example.")
    print(f"saved {NAME}: sha256 {meta['sha256'][:12]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
