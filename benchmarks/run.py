"""Benchmarks: tu.fit against a hand-written PyTorch loop, and per-notebook execution times.

Run with ``make bench`` (or ``python benchmarks/run.py``). Prints two plain-text tables
and writes them to ``_build/bench.json``.

(a) ``tu.fit`` overhead: the same model (``tu.SmallCNN``), data (``tu.load_mnist()``),
    seed, optimizer (Adam, lr 1e-3) and batches (``tu.make_loader``, batch 64) trained
    for 2 epochs by ``tu.fit`` and by the plain loop below; the ratio of the two wall
    times is the price of the helper (target: <= 1.05). Both runs must also end with
    the same weights, which checks that they really did the same work. Timed once by
    default; ``--repeats N`` alternates the two N times and keeps the fastest of each
    (use it on a busy machine).
(b) Every ``book/*.ipynb`` executed with nbclient (timeout 300 s per cell), as the
    book build does; the design budget is 90 s per notebook and 6 min for the book.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
OUT = ROOT / "_build" / "bench.json"
NOTEBOOK_BUDGET_S = 90.0
BOOK_BUDGET_S = 360.0
FIT_TARGET_RATIO = 1.05


def plain_loop(model, loader, *, epochs, lr, device):
    """The loop a reader would write by hand: forward, loss, backward, step."""
    import torch
    import torch.nn.functional as F

    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(epochs):
        model.train()
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return model


def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_fit(
    *, epochs: int = 2, batch_size: int = 64, lr: float = 1e-3, seed: int = 0, repeats: int = 1
) -> dict:
    """Time tu.fit and plain_loop on identical work; return the timings and their ratio.

    With ``repeats > 1`` the two alternate and the fastest time of each is kept.
    """
    import torch

    import transfer_utils as tu

    device = tu.get_device()
    data = tu.load_mnist()

    def fresh():
        tu.seed_everything(seed)
        model = tu.SmallCNN(num_classes=10)
        loader = tu.make_loader(data, batch_size=batch_size, shuffle=True, seed=seed)
        return model, loader

    # Warm-up (not timed): first calls pay for kernel selection and allocator growth.
    model, loader = fresh()
    tu.fit(model, [next(iter(loader))] * 5, epochs=1, lr=lr, progress=False, device=device)
    plain_loop(model, [next(iter(loader))] * 5, epochs=1, lr=lr, device=device)

    t_plain, t_fit, cpu_plain, cpu_fit = [], [], [], []
    for _ in range(repeats):  # interleaved, so a busy machine slows both alike
        model_plain, loader = fresh()
        _sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        plain_loop(model_plain, loader, epochs=epochs, lr=lr, device=device)
        _sync(device)
        t_plain.append(time.perf_counter() - t0)
        cpu_plain.append(time.process_time() - c0)

        model_fit, loader = fresh()
        _sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        tu.fit(model_fit, loader, epochs=epochs, lr=lr, progress=False, device=device)
        _sync(device)
        t_fit.append(time.perf_counter() - t0)
        cpu_fit.append(time.process_time() - c0)

    pairs = zip(model_plain.state_dict().values(), model_fit.state_dict().values(), strict=True)
    max_diff = max((a.float() - b.float()).abs().max().item() for a, b in pairs)
    return {
        "model": "SmallCNN(num_classes=10)",
        "data": f"load_mnist() ({len(data)} images)",
        "epochs": epochs,
        "batch_size": batch_size,
        "batches_per_epoch": len(loader),
        "optimizer": f"Adam(lr={lr})",
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "repeats": repeats,
        "plain_s": min(t_plain),
        "fit_s": min(t_fit),
        "ratio": min(t_fit) / min(t_plain),
        "plain_all_s": t_plain,
        "fit_all_s": t_fit,
        # CPU time of this process (all threads): less sensitive to other load than wall time
        "plain_cpu_s": min(cpu_plain),
        "fit_cpu_s": min(cpu_fit),
        "cpu_ratio": min(cpu_fit) / min(cpu_plain),
        "target_ratio": FIT_TARGET_RATIO,
        "max_abs_weight_diff": max_diff,
    }


def bench_notebooks(paths: list[Path], *, timeout: int = 300) -> list[dict]:
    """Execute each notebook in a fresh kernel, in book/, and time it."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    # Like the book build: let the kernel pick matplotlib's inline backend.
    os.environ.pop("MPLBACKEND", None)
    rows = []
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        client = NotebookClient(
            nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(BOOK)}}
        )
        t0 = time.perf_counter()
        status = "ok"
        try:
            client.execute()
        except CellExecutionError as err:
            status = f"error: {str(err).strip().splitlines()[-1][:80]}"
        except TimeoutError:
            status = f"timeout ({timeout} s per cell)"
        seconds = time.perf_counter() - t0
        rows.append(
            {
                "notebook": str(path.relative_to(ROOT)),
                "seconds": seconds,
                "cells": sum(c.cell_type == "code" for c in nb.cells),
                "status": status,
                "within_budget": seconds <= NOTEBOOK_BUDGET_S,
            }
        )
        print(f"  {path.name}: {seconds:.1f} s ({status})", flush=True)
    return rows


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = "  ".join("-" * w for w in widths)
    out = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)), line]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(row.rstrip() for row in out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-fit", action="store_true", help="skip the tu.fit benchmark")
    parser.add_argument("--skip-notebooks", action="store_true", help="skip the notebooks")
    parser.add_argument("--epochs", type=int, default=2, help="epochs for the fit benchmark")
    parser.add_argument(
        "--repeats", type=int, default=1, help="timed runs of each loop; the fastest counts"
    )
    parser.add_argument(
        "notebooks", nargs="*", type=Path, help="notebooks to time (default: book/*.ipynb)"
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("TU_PROGRESS", "0")

    import torch

    report: dict = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    failed = False
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")

    if not args.skip_fit:
        print(f"(a) tu.fit vs a plain loop ({args.epochs} epochs) ...", flush=True)
        fit = bench_fit(epochs=args.epochs, repeats=args.repeats)
        report["fit"] = fit
        print()
        rows = [
            [name, f"{fit[key]:.2f}", f"{fit[key] / fit['epochs']:.2f}"]
            for name, key in [("plain PyTorch", "plain_s"), ("tu.fit", "fit_s")]
        ]
        print(_table(["loop", "seconds", "per epoch"], rows))
        verdict = "ok" if fit["ratio"] <= FIT_TARGET_RATIO else "ABOVE TARGET"
        print(
            f"ratio tu.fit / plain = {fit['ratio']:.3f} (target <= {FIT_TARGET_RATIO}: {verdict}); "
            f"{fit['model']} on {fit['data']}, batch {fit['batch_size']}, {fit['device']}, "
            f"max |weight difference| = {fit['max_abs_weight_diff']:.2e}"
        )
        print(f"CPU-time ratio (less sensitive to other load) = {fit['cpu_ratio']:.3f}")
        print()

    if not args.skip_notebooks:
        paths = [p.resolve() for p in args.notebooks] or sorted(BOOK.glob("*.ipynb"))
        print(f"(b) executing {len(paths)} notebooks ...", flush=True)
        rows = bench_notebooks(paths)
        total = sum(r["seconds"] for r in rows)
        report["notebooks"] = rows
        report["notebooks_total_s"] = total
        print()
        over = f" (over {NOTEBOOK_BUDGET_S:.0f} s)"
        table = [
            [r["notebook"], f"{r['seconds']:.1f}", str(r["cells"]),
             r["status"] + ("" if r["within_budget"] else over)]
            for r in rows
        ]
        table.append(["total", f"{total:.1f}", "", f"budget {BOOK_BUDGET_S:.0f} s"])
        print(_table(["notebook", "seconds", "code cells", "status"], table))
        failed = any(r["status"] != "ok" for r in rows)

    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {OUT.relative_to(ROOT)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
