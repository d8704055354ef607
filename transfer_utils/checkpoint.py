"""Checkpoints: atomic safetensors files with metadata and a tensor hash; loading never unpickles code.

Core layer (chapter 6 explains why each of these matters).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from . import _validate as V
from .runtime import get_device

__all__ = ["save_checkpoint", "load_checkpoint", "Checkpoint", "LoadReport", "sha256_file"]

_META_KEY = "transfer_utils"
_HASH_KEY = "transfer_utils_tensors_sha256"


@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` returns: the tensors, the metadata and the model (if given)."""

    state_dict: dict[str, torch.Tensor]
    meta: dict = field(default_factory=dict)
    model: nn.Module | None = None
    report: LoadReport | None = None


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _tensor_digest(state: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _remove_stale_temporaries(path: Path) -> None:
    """Delete temporary files left by saves of ``path`` whose process no longer runs."""
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        parts = tmp.name[len(path.name) + 2:].split(".")
        try:
            pid = int(parts[0])
        except (ValueError, IndexError):
            continue
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            tmp.unlink(missing_ok=True)  # its writer is gone: the save was killed
        except OSError:
            pass  # another user's live process (PermissionError): leave it


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_checkpoint(path: str | os.PathLike, model: nn.Module | Mapping[str, torch.Tensor],
                    **meta) -> Path:
    """Save weights and metadata to a ``.safetensors`` file, atomically.

    The file is written to a temporary file in the same folder, flushed to disk and
    then renamed over ``path``, so a crash or a full disk never leaves a
    half-written checkpoint where a good one was; temporaries left by a save that
    was killed are removed by the next save of the same path. ``meta``
    (JSON-serialisable: dataset, recipe, accuracy, ...) is stored in the file's
    header beside the weights, with a SHA-256 of the tensor data that
    :func:`load_checkpoint` verifies. The file gets the usual permissions
    (``0o666`` minus the umask).

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

    if isinstance(path, (bytes, bytearray)) or not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a file path ending in .safetensors, got {path!r}")
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"checkpoint paths end in .safetensors, got {path.name!r}")
    state = V.state_of(model, "the thing to save", "save_checkpoint")
    if not state:
        raise ValueError("nothing to save: the state dict is empty")
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise TypeError(f"checkpoint values must be tensors; {bad[0]!r} is "
                        f"{type(state[bad[0]]).__name__} (put other values in the metadata)")
    if _HASH_KEY in meta:
        raise ValueError(f"{_HASH_KEY!r} is reserved for the tensor hash; rename that metadata")
    try:
        meta_json = json.dumps(meta, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise TypeError(f"checkpoint metadata must be JSON-serialisable: {err}") from None
    # safetensors needs contiguous CPU tensors that share no memory
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.",
                               suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={_META_KEY: meta_json,
                                          _HASH_KEY: _tensor_digest(tensors)})
        os.chmod(tmp, 0o666 & ~_umask())
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@dataclass
class LoadReport:
    """What a non-strict :func:`load_checkpoint` did: what it loaded and what it left out."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    skipped_shape: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = field(
        default_factory=dict)

    @property
    def complete(self) -> bool:
        return not (self.missing or self.unexpected or self.skipped_shape)

    def __str__(self) -> str:
        lines = [f"loaded {len(self.loaded)} tensors; {len(self.missing)} missing from the file "
                 f"(left as they were), {len(self.unexpected)} not in the model, "
                 f"{len(self.skipped_shape)} skipped for shape"]
        lines += [f"  missing    {n}" for n in self.missing]
        lines += [f"  unexpected {n}" for n in self.unexpected]
        for n, (f, m) in self.skipped_shape.items():
            lines += [f"  shape      {n}: file {list(f)}, model {list(m)}"]
        return "\n".join(lines)


def _compare(state: Mapping[str, torch.Tensor], model: nn.Module) -> LoadReport:
    own = model.state_dict()
    report = LoadReport()
    for name, t in own.items():
        if name not in state:
            report.missing.append(name)
        elif tuple(state[name].shape) != tuple(t.shape):
            report.skipped_shape[name] = (tuple(state[name].shape), tuple(t.shape))
        else:
            report.loaded.append(name)
    report.unexpected = [n for n in state if n not in own]
    return report


def load_checkpoint(
    path: str | os.PathLike,
    model: nn.Module | None = None,
    *,
    device: str | torch.device | None = "cpu",
    sha256: str | None = None,
    strict: bool = True,
) -> Checkpoint:
    """Load a checkpoint without ever running pickled code, and check it before using it.

    ``.safetensors`` files hold only tensors and a JSON header; ``.pt``/``.pth``
    files are read with ``torch.load(weights_only=True)``, which refuses
    pickled objects other than tensors and plain containers. A file saved by
    :func:`save_checkpoint` carries a SHA-256 of its tensor data, verified here,
    so a flipped bit is an error, not a silently different model.

    With ``model``, names and shapes are compared before anything is copied: with
    ``strict=True`` any difference is an error and the model is left exactly as
    it was; with ``strict=False`` the tensors that match are loaded, and the
    returned ``report`` (also issued as a warning) lists what was missing,
    unexpected or of another shape.

    Parameters
    ----------
    path : path-like
    model : nn.Module, optional
        Load the weights into it.
    device : str or torch.device
        Where the tensors go (default CPU, whatever device they were saved from).
    sha256 : str, optional
        Expected SHA-256 of the whole file; a mismatch raises before anything is loaded.
    strict : bool

    Returns
    -------
    Checkpoint
        ``state_dict``, ``meta``, ``model`` and, when a model was given, ``report``.

    Examples
    --------
    >>> import tempfile, os, transfer_utils as tu
    >>> path = tu.save_checkpoint(os.path.join(tempfile.mkdtemp(), "m.safetensors"), tu.MLP(4))
    >>> ckpt = tu.load_checkpoint(path, tu.MLP(4))
    >>> ckpt.report.complete, sorted(ckpt.meta)
    (True, [])
    """
    if isinstance(path, (bytes, bytearray)) or not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a file path, got {type(path).__name__}")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}; check the path or save one first")
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; give the checkpoint file inside it")
    if model is not None and not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module to load into, got {type(model).__name__}")
    if sha256 is not None:
        actual = sha256_file(path)
        if actual != str(sha256).lower():
            raise ValueError(
                f"checkpoint {path.name} has SHA-256 {actual[:16]}... but {str(sha256)[:16]}... "
                "was expected: the file is corrupt, truncated or was replaced; re-download or "
                "rebuild it"
            )
    target = get_device(device)
    digest = None
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                header = f.metadata() or {}
                state = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as err:  # safetensors raises its own error types
            raise ValueError(
                f"could not read {path.name}: it is truncated, its header is damaged, or it is "
                f"not a safetensors file ({err}); re-save or re-download it"
            ) from None
        try:
            meta = json.loads(header.get(_META_KEY, "{}"))
        except json.JSONDecodeError as err:
            raise ValueError(
                f"the metadata of {path.name} is damaged (not valid JSON: {err.msg} at "
                f"character {err.pos}); the tensors may be intact, but re-save the checkpoint"
            ) from None
        if not isinstance(meta, dict):
            raise ValueError(f"the metadata of {path.name} is damaged (not a JSON object)")
        digest = header.get(_HASH_KEY)
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
    if digest is not None and _tensor_digest(state) != digest:
        raise ValueError(
            f"the tensor data of {path.name} does not match the SHA-256 recorded when it was "
            "saved: the file was damaged (or edited) after saving; re-save or re-download it"
        )
    report = None
    if model is not None:
        report = _compare(state, model)
        if strict and not report.complete:
            details = "\n".join(str(report).splitlines()[1:9])
            raise ValueError(
                f"{path.name} does not fit {type(model).__name__} (nothing was loaded): "
                f"{len(report.missing)} tensors missing from the file, {len(report.unexpected)} "
                f"not in the model, {len(report.skipped_shape)} of another shape\n{details}\n"
                "load it into the architecture it was saved from, or pass strict=False to load "
                "the tensors that match"
            )
        if not report.complete:
            warnings.warn(f"{path.name}: {report}", stacklevel=2)
        model.load_state_dict({n: state[n] for n in report.loaded}, strict=False)
        model.to(target)
    state = {k: v.to(target) for k, v in state.items()}
    return Checkpoint(state, meta, model, report)
