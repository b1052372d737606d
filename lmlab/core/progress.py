"""Terminal progress bars (tqdm), or a silent stand-in when output is not a terminal."""

from __future__ import annotations


class NullBar:
    """What :func:`progress_bar` gives when it is off: the same calls (and ``with``), doing nothing."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, **values) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(enabled: bool, desc: str, unit: str, total: int | None = None, initial: int = 0):
    """A tqdm bar on stderr, or a :class:`NullBar`; either closes itself as a ``with`` block ends."""
    if not enabled:
        return NullBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True, mininterval=0.5)
