"""Distributed fine-tuning with DDP: the torchrun entry point of chapter 11 (the appendix).

One machine, N processes (gloo on CPU, NCCL when CUDA is present):

    torchrun --standalone --nproc_per_node=N scripts/finetune_ddp.py \\
        --steps 60 --global-batch 32 --seed 0 --bn-eval --out runs/ddp

Several machines (the same command on each, R = 0, 1, ...; HOST = node 0's address):

    torchrun --nnodes=2 --node-rank=R --nproc_per_node=N --rdzv-backend=c10d \\
        --rdzv-endpoint=HOST:29400 --rdzv-id=job1 scripts/finetune_ddp.py ...

Continue a stopped run from its last checkpoint: add ``--resume runs/ddp``.
``python scripts/finetune_ddp.py ...`` without torchrun runs one process.

What it does, top to bottom in ``main``: every process loads the same pretrained
source model (``tu.zoo.load``), puts a new head on it and wraps it in
``DistributedDataParallel``; a ``DistributedSampler`` gives each process its slice
of every global batch; after each backward pass DDP all-reduces the gradients so
every process takes the same optimiser step. Rank 0 alone writes, atomically,
``OUT/model.safetensors`` and ``OUT/optimizer.safetensors`` (every ``--save-every``
steps and at the end) and ``OUT/metrics.json`` (test accuracy, world size, steps,
timings) at the end.

Why 1 and N processes end with the same weights (tested in tests/test_distributed.py):
``DistributedSampler`` shuffles the indices with a generator seeded by
``seed + epoch`` (the same on every rank and for every world size), keeps the first
``W * floor(n / W)`` (``drop_last=True``) and hands rank ``r`` the positions
``r, r + W, r + 2W, ...``. Cut into local batches of ``b = B / W``, the j-th local
batches of the W ranks together hold exactly positions ``j*B ... (j+1)*B - 1`` of
that permutation: the j-th global batch of a one-process run. DDP averages the W
local mean gradients, which (equal local batches) is the mean gradient over the
global batch, up to the order of the floating-point sums. BatchNorm must be kept in
eval mode (``--bn-eval``) for this: in train mode each process normalises with the
statistics of its own local batch.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from contextlib import nullcontext
from datetime import timedelta
from pathlib import Path

T_START = time.perf_counter()

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.nn.parallel import DistributedDataParallel as DDP  # noqa: E402
from torch.utils.data import DataLoader, DistributedSampler  # noqa: E402

import transfer_utils as tu  # noqa: E402

# Settings a resumed run must share with the run it continues (they fix the data order
# and the optimisation); the world size may change between the two.
RUN_KEYS = ("source", "k", "seed", "global_batch", "accumulate", "lr", "momentum", "bn_eval")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Fine-tune a zoo model with DistributedDataParallel; launch with torchrun "
        "(see the top of this file).")
    p.add_argument("--source", default="mnist8_cnn",
                   help="zoo model to fine-tune (tu.zoo.available()); target: sklearn digits")
    p.add_argument("--k", type=int, default=0,
                   help="labelled images per class from the training half (0: all of it)")
    p.add_argument("--steps", type=int, default=60, help="optimiser steps in total")
    p.add_argument("--global-batch", type=int, default=32,
                   help="images per optimiser step, summed over all processes")
    p.add_argument("--accumulate", type=int, default=1,
                   help="micro-batches per step on each process (gradient accumulation)")
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bn-eval", action="store_true",
                   help="keep BatchNorm in eval mode (running statistics; no per-process "
                   "batch statistics)")
    p.add_argument("--backend", choices=("auto", "gloo", "nccl"), default="auto",
                   help="auto: NCCL on GPUs when CUDA is present, else gloo on the CPU")
    p.add_argument("--out", type=Path, help="folder for checkpoints and metrics.json")
    p.add_argument("--resume", type=Path, metavar="DIR",
                   help="continue from the checkpoint in DIR (writes to DIR unless --out)")
    p.add_argument("--save-every", type=int, default=0,
                   help="also checkpoint every N steps (0: only at the end)")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--timeout", type=float, default=120.0,
                   help="seconds to wait for the other processes before giving up")
    p.add_argument("--simulate-crash", type=int, nargs=2, metavar=("RANK", "STEP"),
                   help="make process RANK fail at step STEP (to see and test what happens)")
    args = p.parse_args(argv)
    if args.resume is not None and args.out is None:
        args.out = args.resume
    if args.out is None:
        p.error("--out DIR is required (or --resume DIR)")
    for name in ("steps", "global_batch", "accumulate", "log_every"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be a positive integer, got "
                    f"{getattr(args, name)}")
    if args.k < 0 or args.save_every < 0:
        p.error("--k and --save-every must be >= 0")
    return args


class Failure(Exception):
    """An error this script explains itself: print the message, no traceback."""


def init_distributed(args) -> tuple[int, int, int, str, torch.device]:
    """Join the process group; return (rank, world size, local rank, backend, device)."""
    launched = "RANK" in os.environ  # torchrun (or srun, mpirun, ...) set the env:// variables
    rank = int(os.environ.get("RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    backend = args.backend
    if backend == "auto":
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        if torch.cuda.device_count() < local_world:
            raise Failure(
                f"rank {rank}: NCCL needs one GPU per process, but this machine runs "
                f"{local_world} processes and has {torch.cuda.device_count()} GPU(s); launch "
                f"with --nproc_per_node={max(torch.cuda.device_count(), 1)} or use "
                "--backend gloo (CPU)")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    timeout = timedelta(seconds=args.timeout)
    addr = os.environ.get("MASTER_ADDR", "?")
    port = os.environ.get("MASTER_PORT", "?")
    cannot_join = (
        f"rank {rank}: could not join the process group at {addr}:{port} within "
        f"{args.timeout:g} s: the process that hosts it did not start or failed (see its "
        "message), the port is used by another program, or the address is wrong or blocked.")
    # A rank that reached something else listening on the port can wait forever inside
    # C++; this timer ends it with the message instead.
    watchdog = threading.Timer(args.timeout + 5, lambda: (
        print(cannot_join, file=sys.stderr, flush=True), os._exit(1)))
    watchdog.daemon = True
    watchdog.start()
    try:
        if launched:
            dist.init_process_group(backend, timeout=timeout)
        else:  # a plain `python finetune_ddp.py`: a process group of one, no network
            dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1,
                                    timeout=timeout)
    except dist.DistError as err:
        text = str(err)
        if "EADDRINUSE" in text or "address already in use" in text.lower():
            raise Failure(
                f"rank {rank}: port {port} on {addr} is taken by another program, so the "
                "processes cannot meet there. Launch with `torchrun --standalone` (it picks a "
                "free port) or choose a free one with --master-port / --rdzv-endpoint.") from None
        raise Failure(f"{cannot_join}\n  ({type(err).__name__}: {text.splitlines()[0]})"
                      ) from None
    finally:
        watchdog.cancel()
    return rank, world, local_rank, backend, device


def peer_lost(err: Exception) -> str:
    """The gist of ``err`` if it says that a collective lost its peers, else ''."""
    text = str(err).strip()
    lost = isinstance(err, dist.DistError) or any(
        sign in text for sign in ("Connection closed by peer", "Connection reset by peer",
                                  "Broken pipe", "NCCL", "Timed out", "timed out"))
    if not lost:
        return ""
    if text.startswith("["):  # gloo prefixes its source file: "[.../pair.cc:561] Connection..."
        text = text.split("] ", 1)[-1]
    return text.split(". ")[0].splitlines()[0]


def save_state(out: Path, model, optimizer, step: int, batches_per_epoch: int,
               run: dict) -> None:
    """Rank 0: write optimizer.safetensors, then model.safetensors (each atomically).

    The sampler's position needs no state of its own: step ``s`` resumes in epoch
    ``s // batches_per_epoch`` (the sampler's shuffle seed is ``seed + epoch``) at
    batch ``s % batches_per_epoch`` of it.
    """
    names = [n for n, _ in model.named_parameters()]
    optim = optimizer.state_dict()
    tensors = {"step": torch.tensor(step)}
    for i, state in optim["state"].items():
        tensors.update({f"state.{names[i]}.{key}": value for key, value in state.items()
                        if torch.is_tensor(value)})
    groups = [{k: v for k, v in g.items() if k != "params"} for g in optim["param_groups"]]
    tu.save_checkpoint(out / "optimizer.safetensors", tensors, step=step,
                       param_groups=json.dumps(groups))
    epoch, batch = divmod(step, batches_per_epoch)
    tu.save_checkpoint(out / "model.safetensors", model, step=step, epoch=epoch,
                       batch_in_epoch=batch, world_size=dist.get_world_size(),
                       run=json.dumps(run, sort_keys=True))


def read_state(directory: Path, run: dict, steps: int) -> dict:
    """Rank 0: read and check a checkpoint written by save_state."""
    if not (directory / "model.safetensors").exists():
        raise Failure(f"--resume {directory}: no model.safetensors there; start without "
                      "--resume, or point at the --out folder of an earlier run")
    model_ck = tu.load_checkpoint(directory / "model.safetensors")
    optim_ck = tu.load_checkpoint(directory / "optimizer.safetensors")
    step, saved_run = model_ck.meta["step"], json.loads(model_ck.meta["run"])
    if optim_ck.meta["step"] != step:
        raise Failure(f"--resume {directory}: model is at step {step} but optimizer at step "
                      f"{optim_ck.meta['step']}; the run stopped while saving: resume from a "
                      "copy of an earlier checkpoint or start again")
    changed = [f"--{k.replace('_', '-')} {run[k]} (checkpoint: {saved_run[k]})"
               for k in RUN_KEYS if run[k] != saved_run[k]]
    if changed:
        raise Failure(f"--resume {directory}: a resumed run must keep the settings that fix "
                      f"the data order and the optimisation, but {', '.join(changed)}")
    if step >= steps:
        raise Failure(f"--resume {directory}: the checkpoint is already at step {step}; "
                      f"ask for more with --steps (got {steps})")
    return {"step": step, "epoch": model_ck.meta["epoch"], "model": model_ck.state_dict,
            "optimizer": optim_ck.state_dict, "param_groups": json.loads(
                optim_ck.meta["param_groups"])}


def load_optimizer(optimizer, model, state: dict) -> None:
    names = [n for n, _ in model.named_parameters()]
    per_param: dict[int, dict] = {}
    for key, value in state["optimizer"].items():
        if key.startswith("state."):
            name, _, field = key[len("state."):].rpartition(".")
            per_param.setdefault(names.index(name), {})[field] = value
    groups = state["param_groups"]
    start = 0
    for g, live in zip(groups, optimizer.param_groups, strict=True):
        g["params"] = list(range(start, start + len(live["params"])))
        start += len(live["params"])
    optimizer.load_state_dict({"state": per_param, "param_groups": groups})


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)  # atomic: a reader sees the old file or the new one, never half


def main(argv=None) -> dict | None:
    args = parse_args(argv)
    torch.set_num_threads(int(os.environ.get("TU_THREADS", "1")))
    rank, world, local_rank, backend, device = init_distributed(args)
    run = {key: getattr(args, key) for key in RUN_KEYS}
    step = 0

    # A process that fails makes torchrun stop the others with SIGTERM: say so on each.
    def stopped(signum, frame):
        raise Failure(f"rank {rank}: stopped by the launcher at step {step} (signal {signum}): "
                      "another process failed; its message is above. Continue with "
                      f"--resume {args.out} once the cause is fixed.")
    signal.signal(signal.SIGTERM, stopped)

    # Equal local batches, or the average of the local means is not the global mean.
    parts = world * args.accumulate
    per_process, rest = divmod(args.global_batch, parts)
    if rest:
        raise Failure(
            f"rank {rank}: --global-batch {args.global_batch} does not split into equal "
            f"local batches over {world} processes x {args.accumulate} micro-batches; use a "
            f"multiple of {parts} (e.g. {max(1, round(args.global_batch / parts)) * parts})")
    local_batch = per_process * args.accumulate

    # Data: scikit-learn's digits; train on (k-shot from) one half, test on the other.
    train, test = tu.split(tu.load_digits(), (0.5, 0.5), seed=0)
    if args.k:
        train = tu.few_shot(train, args.k, seed=args.seed)
    if len(train) < args.global_batch:
        raise Failure(f"rank {rank}: --global-batch {args.global_batch} is larger than the "
                      f"{len(train)} training images; use a smaller batch or a larger --k")
    sampler = DistributedSampler(train, num_replicas=world, rank=rank, shuffle=True,
                                 seed=args.seed, drop_last=True)
    loader = DataLoader(train, batch_size=local_batch, sampler=sampler, drop_last=True)
    batches_per_epoch = len(loader)  # = floor(n / global batch), whatever the world size

    # Model: the same pretrained body and the same new head on every process.
    model = tu.zoo.load(args.source, device="cpu")
    tu.seed_everything(args.seed)
    tu.replace_head(model, num_classes=train.num_classes)
    model.to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)

    # Resume: rank 0 reads and checks the checkpoint and sends it (or its error) to all.
    if args.resume is not None:
        message = [None]
        if rank == 0:
            try:
                message = [read_state(args.resume, run, args.steps)]
            except Failure as err:
                message = [str(err)]
        dist.broadcast_object_list(message, src=0, device=device)
        if isinstance(message[0], str):
            raise Failure(message[0] if rank == 0 else f"rank {rank}: {message[0]}")
        state = message[0]
        model.load_state_dict(state["model"])
        load_optimizer(optimizer, model, state)
        step = state["step"]
    start_step = step
    ddp = DDP(model, device_ids=[local_rank] if device.type == "cuda" else None)

    if rank == 0:
        print(f"world size {world} ({backend} on {device.type}); global batch "
              f"{args.global_batch} = {world} processes x {local_batch}"
              + (f" ({args.accumulate} micro-batches of {per_process})"
                 if args.accumulate > 1 else "")
              + f"; {len(train)} training images, {batches_per_epoch} steps per epoch; "
              f"steps {step} -> {args.steps}", flush=True)
    dist.barrier()
    t_train = time.perf_counter()
    startup_seconds = t_train - T_START

    # The training loop. Epoch e reshuffles with seed + e; a resumed run skips the
    # batches of its epoch that were already used (reading them again is cheap here;
    # a large data set would seek instead).
    ddp.train()
    if args.bn_eval:
        for m in ddp.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()
    log_loss, log_steps = torch.zeros((), device=device), 0
    try:
        while step < args.steps:
            epoch, skip = divmod(step, batches_per_epoch)
            sampler.set_epoch(epoch)
            for i, (x, y) in enumerate(loader):
                if i < skip:
                    continue
                if step >= args.steps:
                    break
                if args.simulate_crash == [rank, step]:
                    raise Failure(f"rank {rank}: simulated crash at step {step} "
                                  f"(--simulate-crash {rank} {step})")
                x, y = x.to(device), y.to(device)
                for j, (xm, ym) in enumerate(zip(x.chunk(args.accumulate),
                                                 y.chunk(args.accumulate), strict=True)):
                    last = j == args.accumulate - 1
                    # DDP all-reduces the gradients during the backward of the last
                    # micro-batch only; before it they add up locally.
                    with ddp.no_sync() if not last else nullcontext():
                        loss = F.cross_entropy(ddp(xm), ym) / args.accumulate
                        loss.backward()
                    log_loss += loss.detach()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                log_steps += 1
                if step % args.log_every == 0 or step == args.steps:
                    dist.all_reduce(log_loss)  # the mean over processes, for the log only
                    if rank == 0:
                        mean = log_loss.item() / world / log_steps
                        print(f"step {step:4d}  loss {mean:.4f}", flush=True)
                    log_loss.zero_()
                    log_steps = 0
                if rank == 0 and args.save_every and step % args.save_every == 0:
                    save_state(args.out, model, optimizer, step, batches_per_epoch, run)
    except (dist.DistError, RuntimeError) as err:
        if not peer_lost(err):
            raise
        raise Failure(
            f"rank {rank}: lost contact with another process at step {step}: it failed (see "
            "its message) or its machine went down. Continue from the last checkpoint with "
            f"--resume {args.out}.\n  ({peer_lost(err)})") from None
    dist.barrier()
    train_seconds = time.perf_counter() - t_train

    metrics = None
    if rank == 0:
        args.out.mkdir(parents=True, exist_ok=True)
        save_state(args.out, model, optimizer, step, batches_per_epoch, run)
        result = tu.evaluate(model, DataLoader(test, batch_size=512), device=device)
        metrics = {
            "test_accuracy": round(result["accuracy"], 4), "test_loss": round(result["loss"], 4),
            "world_size": world, "backend": backend, "device": device.type, "steps": step,
            "global_batch": args.global_batch, "local_batch": local_batch,
            "accumulate": args.accumulate, "bn_eval": args.bn_eval, "seed": args.seed,
            "train_images": len(train), "test_images": result["n"],
            "resumed_from_step": start_step if args.resume is not None else None,
            "startup_seconds": round(startup_seconds, 2),
            "train_seconds": round(train_seconds, 3),
            "seconds_per_step": round(train_seconds / (step - start_step), 5),
            "torch": torch.__version__,
        }
        write_json(args.out / "metrics.json", metrics)
        print(f"test accuracy {metrics['test_accuracy']:.4f} after {step} steps; "
              f"{train_seconds:.2f} s of training; wrote {args.out}/", flush=True)
    dist.destroy_process_group()
    return metrics


def cli(argv=None) -> int:
    """Run main; print a failure this script understands as one clear line per process."""
    previous = signal.getsignal(signal.SIGTERM)
    try:
        main(argv)
    except Failure as err:
        print(err, file=sys.stderr, flush=True)
        return 1
    except Exception as err:  # a bug or an unforeseen error: say which process, then trace
        print(f"rank {os.environ.get('RANK', '0')}: failed: {type(err).__name__}: {err}",
              file=sys.stderr, flush=True)
        raise
    finally:  # the message is out: a later SIGTERM from the launcher just ends the process
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0


if __name__ == "__main__":
    sys.exit(cli())
