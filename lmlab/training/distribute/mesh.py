"""The ``distribute`` and ``mesh`` settings: what they may hold, parsed without loading TensorFlow or JAX."""

from __future__ import annotations

import reprlib

from lmlab.core.errors import ConfigError

MODES = ("none", "data", "model")
MESH_AXES = ("batch", "model")


def check_mode(distribute) -> str:
    if not isinstance(distribute, str) or distribute not in MODES:
        raise ConfigError(f"distribute must be one of {', '.join(MODES)}, got {reprlib.repr(distribute)}")
    return distribute


def parse_mesh(mesh) -> dict[str, int]:
    """``"batch=2,model=4"`` → ``{"batch": 2, "model": 4}``; ``""`` → ``{}`` (decided from the devices)."""
    if not isinstance(mesh, str):
        raise ConfigError(f"mesh must be a string like batch=2,model=4, got {reprlib.repr(mesh)}")
    axes: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in mesh.split(","))):
        name, sep, size = part.partition("=")
        name = name.strip()
        if not sep or name not in MESH_AXES:
            raise ConfigError(f"mesh: expected axes {' and '.join(MESH_AXES)} as NAME=SIZE (e.g. batch=2,model=4), "
                              f"got {part!r}")
        if name in axes:
            raise ConfigError(f"mesh: axis {name} is given twice in {mesh!r}")
        try:
            axes[name] = int(size)
        except ValueError:
            axes[name] = 0
        if axes[name] < 1:
            raise ConfigError(f"mesh: {name} must be a positive integer, got {size.strip()!r}")
    return axes


def check(distribute, mesh) -> None:
    """Raise :class:`ConfigError` naming the field for a bad pair of settings."""
    check_mode(distribute)
    axes = parse_mesh(mesh)
    if axes and distribute != "model":
        raise ConfigError(f"mesh is only used with distribute=model, not distribute={distribute}")
