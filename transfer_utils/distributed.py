"""Data-parallel training arithmetic (chapter 11): which examples each process gets, and memory.

Two small, exact models of what ``torch.distributed`` does, so chapter 11 can draw
and count them without launching anything: :func:`rank_batches` is the partition
that ``DistributedSampler(drop_last=True)`` and a ``DataLoader(drop_last=True)``
make of one shuffled epoch, and :func:`training_memory` is the per-device memory of
the training state under DDP (every process holds everything) and under FSDP (each
holds ``1/N``). The script that really trains on several processes is
``scripts/finetune_ddp.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

from ._validate import one_of, positive_int

__all__ = ["rank_batches", "training_memory"]


def rank_batches(perm: Sequence[int], world_size: int, local_batch: int) -> list[list[list[int]]]:
    """The local batches every process gets from one shuffled epoch, as DDP's sampler makes them.

    ``DistributedSampler(shuffle=True, drop_last=True)`` shuffles ``n`` indices (with
    a generator seeded by ``seed + epoch``: ``perm``), keeps the first
    ``world_size * (n // world_size)`` and gives process ``r`` every
    ``world_size``-th of them from position ``r``; a ``DataLoader(batch_size=local_batch,
    drop_last=True)`` then cuts that list into full batches. The j-th local batches of
    all processes together are positions ``j*B ... (j+1)*B - 1`` of ``perm``, with the
    global batch ``B = world_size * local_batch``: the batches of a one-process run
    (chapter 11).

    Parameters
    ----------
    perm : sequence of int
        The epoch's shuffled indices.
    world_size : int
        Number of processes.
    local_batch : int
        Examples per process per step.

    Returns
    -------
    list
        ``out[r][j]`` is the list of indices in process ``r``'s j-th batch.

    Examples
    --------
    >>> import transfer_utils as tu
    >>> tu.rank_batches([7, 3, 9, 0, 4, 8, 1, 5], world_size=2, local_batch=2)
    [[[7, 9], [4, 1]], [[3, 0], [8, 5]]]
    >>> tu.rank_batches([7, 3, 9, 0, 4, 8, 1, 5], world_size=1, local_batch=4)
    [[[7, 3, 9, 0], [4, 8, 1, 5]]]
    """
    world_size = positive_int(world_size, "world_size", "rank_batches")
    local_batch = positive_int(local_batch, "local_batch", "rank_batches")
    perm = [int(i) for i in perm]
    kept = perm[: world_size * (len(perm) // world_size)]
    out = []
    for rank in range(world_size):
        mine = kept[rank::world_size]
        out.append([mine[i:i + local_batch]
                    for i in range(0, len(mine) - local_batch + 1, local_batch)])
    return out


# bytes per parameter of each part of the training state
_PRECISIONS = {
    # weights and gradients in 32-bit floats, Adam's two moments in 32-bit floats
    "fp32": {"weights": 4, "gradients": 4, "optimizer": 8},
    # bf16/fp16 weights and gradients, plus an fp32 master copy and two fp32 moments
    # (mixed-precision Adam; Micikevicius et al. 2018, ZeRO's 16 bytes per parameter)
    "mixed": {"weights": 2, "gradients": 2, "optimizer": 12},
}


def training_memory(n_params: int, world_size: int = 1, *, strategy: str = "ddp",
                    precision: str = "mixed") -> dict[str, float]:
    """GB of training state per device for Adam under DDP or FSDP (activations not included).

    DDP keeps a full copy of weights, gradients and optimizer state on every
    device. FSDP (``fully_shard``) keeps ``1/world_size`` of each and gathers one
    layer's full weights at a time, only while that layer runs, which this count
    leaves out (it is the largest layer's size, not the model's). Chapter 11 uses
    it for the arithmetic of a model that does not fit one device.

    Parameters
    ----------
    n_params : int
        Number of parameters.
    world_size : int
        Number of devices.
    strategy : {"ddp", "fsdp"}
    precision : {"mixed", "fp32"}
        ``"mixed"``: 2-byte weights and gradients with an fp32 master copy and fp32
        Adam moments (16 bytes per parameter); ``"fp32"``: everything in 4 bytes
        (16 as well: 4 + 4 + 8, but nothing to cast).

    Returns
    -------
    dict
        ``{"weights", "gradients", "optimizer", "total"}`` in GB (10**9 bytes) per device.

    Examples
    --------
    >>> import transfer_utils as tu
    >>> tu.training_memory(7_000_000_000)["total"]
    112.0
    >>> tu.training_memory(7_000_000_000, 8, strategy="fsdp")["total"]
    14.0
    """
    n_params = positive_int(n_params, "n_params", "training_memory")
    world_size = positive_int(world_size, "world_size", "training_memory")
    one_of(strategy, "strategy", ("ddp", "fsdp"), "training_memory")
    one_of(precision, "precision", tuple(_PRECISIONS), "training_memory")
    share = 1 / world_size if strategy == "fsdp" else 1.0
    out = {part: n_params * nbytes * share / 1e9
           for part, nbytes in _PRECISIONS[precision].items()}
    out["total"] = sum(out.values())
    return out


