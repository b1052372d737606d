"""Checkpoints: safetensors weights and optimizer state plus JSON, written atomically.

Layout under ``RUN/checkpoints/``::

    step-000250/model.safetensors      model variables by path (no pickle, no code)
    step-000250/optimizer.safetensors  optimizer variables in order
    step-000250/state.json             step, data position, metrics
    last.json, best.json               pointers, each replaced atomically

A checkpoint folder is written under a temporary name and renamed into
place when complete; only then do the pointers move. A crash at any moment
leaves the previous pointers naming complete checkpoints.

Readers of a run that is still training (eval, generate, export, fine-tuning
from it) race the rotation that deletes old checkpoints, so both sides take
care: rotation keeps, beside the newest ``keep``, what the pointers name now
and what they named just before this checkpoint (a reader that read a pointer
a moment ago still finds its folder); :func:`read_pointed` resolves a pointer
and reads what it names, and when that checkpoint vanished under it and the
pointer has moved on, resolves it again (at most :data:`READ_ATTEMPTS` times).
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from pathlib import Path

import numpy as np

from lmlab.core.errors import ConfigError, DataError, LmlabError
from lmlab.core.io import fsync_dir, read_json, write_json

MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "state.json"
CHECKPOINT_NAME = re.compile(r"step-[0-9]{6,}")
POINTERS = ("last", "best")
READ_ATTEMPTS = 5  # a reader slower than this many checkpoints of the writer is told so


def variable_key(variable) -> str:
    """A variable's path without the model's own (auto-numbered) name."""
    path = getattr(variable, "path", variable.name)
    return path.split("/", 1)[1] if "/" in path else path


def save_tensors(tensors: dict[str, np.ndarray], path: Path) -> None:
    from safetensors import SafetensorError
    from safetensors.numpy import save_file

    tmp = path.with_name(path.name + ".tmp")
    try:
        save_file(tensors, str(tmp))
    except SafetensorError as error:  # how safetensors reports a failed write (a full disk, no permission)
        raise OSError(errno.EIO, f"safetensors could not write it ({error})") from None
    with open(tmp, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def load_tensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    if not path.exists():
        raise DataError(f"{path}: checkpoint file is missing")
    try:
        return load_file(str(path))
    except Exception as error:  # safetensors raises its own error types for bad headers
        raise DataError(f"{path}: not a readable safetensors file ({error})") from None


def model_tensors(model) -> dict[str, np.ndarray]:
    return {variable_key(v): np.asarray(v.numpy() if hasattr(v, "numpy") else v) for v in model.variables}


def assign_model(model, tensors: dict[str, np.ndarray], source) -> None:
    """Load tensors into the model's variables; name every mismatch before changing anything."""
    variables = {variable_key(v): v for v in model.variables}
    missing = sorted(set(variables) - set(tensors))
    unexpected = sorted(set(tensors) - set(variables))
    shapes = [f"{k}: checkpoint {tuple(tensors[k].shape)} vs model {tuple(variables[k].shape)}"
              for k in sorted(set(variables) & set(tensors)) if tuple(tensors[k].shape) != tuple(variables[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:5])}{' ...' if len(unexpected) > 5 else ''}")
        if shapes:
            parts.append(f"shape mismatch {'; '.join(shapes[:5])}")
        raise ConfigError(f"{source} does not match the model: {'; '.join(parts)}")
    for key, variable in variables.items():
        variable.assign(tensors[key].astype(variable.dtype))


def write_step(checkpoints: Path, step: int, files: dict[str, dict[str, np.ndarray]], state: dict) -> str:
    """Write ``checkpoints/step-NNNNNN`` atomically: the tensor files and ``state.json`` in a temporary
    folder, synced, then renamed into place (a crash leaves the previous step intact). Returns its name."""
    checkpoints.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:06d}"
    tmp = checkpoints / f"{name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        for filename, tensors in files.items():
            save_tensors(tensors, tmp / filename)
        write_json(tmp / STATE_FILE, {**state, "step": step})
        fsync_dir(tmp)
        final = checkpoints / name
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        fsync_dir(checkpoints)
    except OSError as error:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError(f"cannot write checkpoint {checkpoints / name}: {error.strerror or error}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return name


def optimizer_tensors(optimizer) -> dict[str, np.ndarray]:
    """The optimizer's variables in order (its step counter, moments), keyed ``00000``, ``00001``, ..."""
    return {f"{i:05d}": np.asarray(v.numpy()) for i, v in enumerate(optimizer.variables)}


def save_checkpoint(run_dir, step: int, model, optimizer, state: dict, best: bool = False, keep: int = 2,
                    files: dict | None = None) -> Path:
    """Write ``run_dir/checkpoints/step-NNNNNN`` (:func:`write_step`), move the pointers and rotate old ones.

    ``model``: its variables go to :data:`MODEL_FILE` (None: no model file); ``files``: further tensor
    files by name (a fine-tune's adapters and head, :mod:`lmlab.tasks.finetune`)."""
    folder = Path(run_dir) / "checkpoints"
    files = dict(files or {})
    if model is not None:
        files[MODEL_FILE] = model_tensors(model)
    if optimizer is not None:
        files[OPTIMIZER_FILE] = optimizer_tensors(optimizer)
    name = write_step(folder, step, files, state)
    named_before = {_pointed_if_readable(folder / f"{p}.json") for p in POINTERS}  # what readers may be reading
    write_json(folder / "last.json", {"checkpoint": name, "step": step})
    if best:
        write_json(folder / "best.json", {"checkpoint": name, "step": step, **{k: v for k, v in state.items()
                                                                              if k.startswith("val")}})
    _prune(folder, keep, named_before)
    return folder / name


def _pointed(pointer: Path) -> str | None:
    """The checkpoint name a pointer file gives, or None when there is no pointer."""
    if not pointer.exists():
        return None
    data = read_json(pointer, "checkpoint pointer")
    name = data.get("checkpoint") if isinstance(data, dict) else None
    if not isinstance(name, str) or not CHECKPOINT_NAME.fullmatch(name):
        raise DataError(f"{pointer}: not a checkpoint pointer (expected {{\"checkpoint\": \"step-NNNNNN\"}})")
    return name


def _pointed_if_readable(pointer: Path) -> str | None:
    """What a pointer names, or None when it is missing or damaged (then it pins nothing)."""
    try:
        return _pointed(pointer)
    except LmlabError:
        return None


def _prune(folder: Path, keep: int, named_before: set) -> None:
    """Delete old checkpoints: all but the newest ``keep``, what the pointers name, and what they named before.

    Keeping the pointers' previous targets (not only their current ones) is what lets a reader that
    resolved a pointer just before it moved finish reading: its folder outlives one more checkpoint.
    """
    pinned = {_pointed(folder / f"{p}.json") for p in POINTERS} | named_before
    steps = sorted(p for p in folder.glob("step-*") if p.is_dir() and ".tmp" not in p.name)
    for old in steps[:-keep]:
        if old.name not in pinned:
            shutil.rmtree(old, ignore_errors=True)
    for stale in folder.glob("step-*.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)


def _resolve(run_dir, which: str, fallback: str | None) -> tuple[Path, str | None]:
    """The pointer file to follow (``fallback``'s when ``which`` has none) and the checkpoint it names."""
    pointer = Path(run_dir) / "checkpoints" / f"{which}.json"
    name = _pointed(pointer)
    if name is None and fallback:
        pointer = pointer.with_name(f"{fallback}.json")
        name = _pointed(pointer)
    return pointer, name


def _whole(pointer: Path, name: str) -> Path:
    path = pointer.parent / name
    if not (path / STATE_FILE).exists():
        raise DataError(f"{pointer} names {path.name}, which is missing or incomplete")
    return path


def find_checkpoint(run_dir, which: str = "last") -> Path | None:
    """The checkpoint folder the ``which`` pointer names, or None when there is none yet.

    For the writer and for folders nobody writes: a reader of a run that may be training reads
    through :func:`read_pointed`, which survives rotation.
    """
    pointer, name = _resolve(run_dir, which, None)
    return None if name is None else _whole(pointer, name)


def read_pointed(run_dir, which: str = "last", fallback: str | None = None, read=None) -> tuple[Path, object] | None:
    """The checkpoint the ``which`` pointer names (``fallback``'s without one) and ``read(path)`` of it.

    Safe while a trainer writes the run: when reading fails and the pointer has moved on meanwhile
    (rotation deleted the folder under the reader), the pointer is resolved again and the newer
    checkpoint read, up to :data:`READ_ATTEMPTS` times. A checkpoint that fails while its pointer
    still names it is damaged, and its error is raised as it is. ``read`` defaults to
    :func:`read_checkpoint`; it must read everything it needs, so the result outlives the folder.
    Returns None when there is no pointer.
    """
    read = read or read_checkpoint
    attempt = 1
    while True:
        pointer, name = _resolve(run_dir, which, fallback)
        if name is None:
            return None
        try:
            path = _whole(pointer, name)
            return path, read(path)
        except (LmlabError, OSError) as error:
            if _resolve(run_dir, which, fallback)[1] == name:
                raise  # nothing moved: the checkpoint itself is missing or damaged
            if attempt == READ_ATTEMPTS:
                raise DataError(f"{pointer.parent}: {READ_ATTEMPTS} checkpoints in a row were rotated away while "
                                f"being read ({error}); raise keep_checkpoints or checkpoint less often "
                                "(eval_interval)") from None
            attempt += 1


def _state_problem(state) -> str | None:
    """What makes a checkpoint's state unusable for resuming, or None."""
    if not isinstance(state, dict):
        return "not a JSON object"
    step = state.get("step")
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        return f"step must be an integer >= 0, got {step!r:.40}"
    for key in ("val_loss", "best_val_loss", "elapsed_s"):
        if key in state and (not isinstance(state[key], (int, float)) or isinstance(state[key], bool)):
            return f"{key} must be a number, got {state[key]!r:.40}"
    for key in ("stale_evals", "skipped_batches"):
        if key in state and (not isinstance(state[key], int) or isinstance(state[key], bool) or state[key] < 0):
            return f"{key} must be an integer >= 0, got {state[key]!r:.40}"
    return None


def read_checkpoint(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """A checkpoint's state and model tensors, checked, with no model needed (so a bad file fails fast)."""
    state = read_json(path / STATE_FILE, "checkpoint state")
    problem = _state_problem(state)
    if problem:
        raise DataError(f"{path / STATE_FILE}: {problem}")
    return state, load_tensors(path / MODEL_FILE)


def load_checkpoint(path: Path, model, optimizer=None, read: tuple | None = None) -> dict:
    """Restore model (and optimizer) variables from a checkpoint folder; return its state.

    ``read``: what :func:`read_checkpoint` already returned for this folder.
    """
    state, tensors = read or read_checkpoint(path)
    assign_model(model, tensors, path / MODEL_FILE)
    if optimizer is not None:
        load_optimizer(path, optimizer)
    return state


def load_optimizer(path: Path, optimizer) -> None:
    """Restore the optimizer's variables from a checkpoint folder's :data:`OPTIMIZER_FILE`."""
    tensors = load_tensors(path / OPTIMIZER_FILE)
    variables = optimizer.variables
    if len(tensors) != len(variables):
        raise ConfigError(f"{path / OPTIMIZER_FILE}: {len(tensors)} optimizer tensors, the optimizer has "
                          f"{len(variables)}; was it saved with other settings?")
    for i, variable in enumerate(variables):
        if f"{i:05d}" not in tensors:
            raise DataError(f"{path / OPTIMIZER_FILE}: optimizer tensor {i:05d} is missing")
        value = tensors[f"{i:05d}"]
        if tuple(value.shape) != tuple(variable.shape):
            raise ConfigError(f"{path / OPTIMIZER_FILE}: optimizer tensor {i} has shape {value.shape}, "
                              f"expected {tuple(variable.shape)}")
        variable.assign(value.astype(variable.dtype))
