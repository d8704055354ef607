"""Safe checkpoints: atomic safetensors files with metadata; loading never unpickles code."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .runtime import get_device

__all__ = ["save_checkpoint", "load_checkpoint", "Checkpoint", "sha256_file"]

_META_KEY = "transfer_utils"


@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` returns: the tensors, the metadata and the model (if given)."""

    state_dict: dict[str, torch.Tensor]
    meta: dict = field(default_factory=dict)
    model: nn.Module | None = None


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_checkpoint(path: str | os.PathLike, model: nn.Module | Mapping[str, torch.Tensor],
                    **meta) -> Path:
    """Save weights and metadata to a ``.safetensors`` file, atomically.

    The file is written to a temporary file in the same folder, flushed to disk and
    then renamed over ``path``, so a crash or a full disk never leaves a
    half-written checkpoint where a good one was. ``meta`` (JSON-serialisable:
    dataset, recipe, accuracy, ...) is stored in the file's header beside the
    weights.

    Returns
    -------
    pathlib.Path
        The path written.

    Examples
    --------
    >>> import tempfile, os, transfer_utils as tu
    >>> path = os.path.join(tempfile.mkdtemp(), "net.safetensors")
    >>> _ = tu.save_checkpoint(path, tu.SmallCNN(), note="demo")
    >>> tu.load_checkpoint(path).meta["note"]
    'demo'
    """
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"checkpoint paths end in .safetensors, got {path.name!r}")
    state = model.state_dict() if isinstance(model, nn.Module) else dict(model)
    if not state:
        raise ValueError("nothing to save: the state dict is empty")
    try:
        meta_json = json.dumps(meta, sort_keys=True)
    except TypeError as err:
        raise TypeError(f"checkpoint metadata must be JSON-serialisable: {err}") from None
    # safetensors needs contiguous CPU tensors that share no memory
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={_META_KEY: meta_json})
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(
    path: str | os.PathLike,
    model: nn.Module | None = None,
    *,
    device: str | torch.device | None = "cpu",
    sha256: str | None = None,
    strict: bool = True,
) -> Checkpoint:
    """Load a checkpoint without ever running pickled code.

    ``.safetensors`` files hold only tensors and a JSON header; ``.pt``/``.pth``
    files are read with ``torch.load(weights_only=True)``, which refuses
    pickled objects other than tensors and plain containers.

    Parameters
    ----------
    path : path-like
    model : nn.Module, optional
        Load the weights into it (``strict`` as in ``load_state_dict``).
    device : str or torch.device
        Where the tensors go (default CPU, whatever device they were saved from).
    sha256 : str, optional
        Expected SHA-256 of the file; a mismatch raises before anything is loaded.
    strict : bool

    Returns
    -------
    Checkpoint
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}; check the path or save one first")
    if sha256 is not None:
        actual = sha256_file(path)
        if actual != sha256.lower():
            raise ValueError(
                f"checkpoint {path.name} has SHA-256 {actual[:16]}... but {sha256[:16]}... was "
                "expected: the file is corrupt, truncated or was replaced; re-download or "
                "rebuild it"
            )
    target = get_device(device)
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                header = f.metadata() or {}
                state = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as err:  # safetensors raises its own error types
            raise ValueError(
                f"could not read {path.name}: it is truncated or not a safetensors file ({err}); "
                "re-save or re-download it"
            ) from None
        meta = json.loads(header.get(_META_KEY, "{}"))
    elif path.suffix in (".pt", ".pth"):
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise ValueError(
                f"refused to load {path.name}: it is truncated, or it holds pickled code or "
                f"objects rather than plain tensors ({type(err).__name__}); only load files you "
                "trust, and prefer .safetensors"
            ) from None
        if not isinstance(obj, Mapping) or not all(
            isinstance(v, torch.Tensor) for v in obj.get("state_dict", obj).values()
        ):
            raise ValueError(f"{path.name} does not hold a state dict of tensors")
        meta = dict(obj.get("meta", {})) if "state_dict" in obj else {}
        state = dict(obj.get("state_dict", obj))
    else:
        raise ValueError(f"unknown checkpoint type {path.suffix!r}; use .safetensors or .pt")
    state = {k: v.to(target) for k, v in state.items()}
    if model is not None:
        model.load_state_dict(state, strict=strict)
        model.to(target)
    return Checkpoint(state, meta, model)
