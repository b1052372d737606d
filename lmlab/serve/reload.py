"""Hot reload: a served run that is still training moves to each new checkpoint its pointer names.

A thread looks at the run's pointer (``best``, or ``last`` before there is a best) every ``every``
seconds. When it names a checkpoint other than the one being served, the thread reads it whole
through :func:`~lmlab.runs.checkpoint.read_pointed`, which survives the trainer rotating that
checkpoint away mid-read (it follows the pointer to the newer one), and hands the tensors to the
engine thread, which assigns them between two decode steps (:meth:`Engine.call_soon`): no request
waits for the disk, and none is dropped. A sequence decoding at that moment goes on with the new
weights over the cache the old ones wrote. A read that fails (a damaged or vanished checkpoint,
the writer faster than :data:`~lmlab.runs.checkpoint.READ_ATTEMPTS` reads) is logged and tried
again at the next look; the server keeps the weights it has.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from lmlab.core.backend import check_backend
from lmlab.core.errors import LmlabError
from lmlab.runs.checkpoint import MODEL_FILE, assign_model, find_checkpoint, read_pointed

log = logging.getLogger("lmlab.serve")


class Reloader:
    """Watches ``folder``'s ``which`` pointer and swaps the engine's weights when it moves; :meth:`stop` ends it."""

    def __init__(self, engine, folder, which: str = "best", every: float = 2.0, served: str | None = None):
        self.engine, self.folder, self.which, self.every = engine, Path(folder), which, float(every)
        self.served = served  # the checkpoint folder name the engine holds now
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._watch, name="lmlab-reload", daemon=True)

    def start(self) -> "Reloader":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=10)

    def pointed(self) -> str | None:
        """The checkpoint name the pointer gives now (``last``'s while there is no ``best``), or None."""
        for which in dict.fromkeys((self.which, "last")):
            try:
                path = find_checkpoint(self.folder, which)
            except (LmlabError, OSError):  # being replaced or rotated this moment: look again next time
                return None
            if path is not None:
                return path.name
        return None

    def check(self) -> bool:
        """One look: when the pointer moved, read the checkpoint and queue the swap; True if it did."""
        if self.pointed() in (None, self.served):
            return False
        try:
            found = read_pointed(self.folder, self.which, fallback="last")
        except (LmlabError, OSError) as error:
            log.warning("hot reload: could not read %s (%s); keeping %s", self.folder, error, self.served)
            return False
        if found is None or found[0].name == self.served:
            return False
        path, (state, tensors) = found
        self.served = path.name
        self.engine.call_soon(lambda: self._swap(path, state, tensors))
        return True

    def _swap(self, path: Path, state: dict, tensors: dict) -> None:
        """On the engine thread, between steps."""
        try:
            assign_model(self.engine.model, tensors, path / MODEL_FILE)  # checks every shape before assigning any
        except LmlabError as error:  # another architecture under the same run: keep serving what we have
            log.warning("hot reload: %s; keeping %s", error, self.engine.served)
            return
        if check_backend() != "tensorflow":  # jax.jit took the old weights in as constants
            self.engine.batch.recompile()
        self.engine.served = {"checkpoint": path.name, "step": state["step"]}
        self.engine.metrics.count_reload()
        log.warning("hot reload: now serving %s (step %s)", path.name, state["step"])

    def _watch(self) -> None:
        while not self.stopped.wait(self.every):
            try:
                self.check()
            except Exception:  # the watcher must outlive any surprise; requests never depend on it
                log.exception("hot reload failed")
