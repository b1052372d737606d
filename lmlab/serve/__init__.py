"""``lmlab serve``: a run's model behind OpenAI's HTTP API, with continuous batching and a playground.

:func:`serve` is the whole server from Python; :mod:`~lmlab.serve.engine` is the one thread that
decodes, :mod:`~lmlab.serve.app` the routes, :mod:`~lmlab.serve.protocol` the request checks.
See docs/serving.md.
"""

from __future__ import annotations

from pathlib import Path

from lmlab.core.errors import ConfigError
from lmlab.core.extras import require
from lmlab.runs.load import LoadedRun, load_run
from lmlab.serve.reload import Reloader


def build_engine(run, checkpoint: str = "best", max_batch: int = 8, max_queue: int = 64,
                 context: int | None = None):
    """The engine (started: compiled and decoding) for a run folder or a loaded run."""
    from lmlab.serve.engine import Engine

    loaded = run if isinstance(run, LoadedRun) else load_run(run, checkpoint)
    if not (hasattr(loaded.model, "call_with_cache") or counted(loaded)):
        family = loaded.config["model"].get("family", "transformer")
        raise ConfigError("lmlab serve generates left to right: transformer, rnn, gated_cnn and n-gram runs (not "
                          f"masked LMs); this run is {family!r}")
    engine = Engine(loaded.model, loaded.tokenizer, max_batch, max_queue, context)
    engine.served = {"checkpoint": Path(loaded.checkpoint).name, "step": loaded.step}
    return engine.start(), loaded


def counted(loaded: LoadedRun) -> bool:
    """An n-gram run: decoded from its counts on the host, with no checkpoints to reload."""
    return hasattr(loaded.model, "next_log_probs")


def serve(run, host: str = "127.0.0.1", port: int = 8000, checkpoint: str = "best", max_batch: int = 8,
          max_queue: int = 64, context: int | None = None, model_name: str | None = None,
          reload_every: float = 2.0, log=print) -> None:
    """Serve ``run`` (a run folder) on ``host:port`` until interrupted; every ``reload_every`` seconds (0: never)
    look whether the run's ``checkpoint`` pointer moved, and swap the new weights in (:mod:`lmlab.serve.reload`)."""
    require("fastapi", "lmlab serve")
    uvicorn = require("uvicorn", "lmlab serve")
    from lmlab.serve.app import create_app

    engine, loaded = build_engine(run, checkpoint, max_batch, max_queue, context)
    name = model_name or Path(loaded.folder).resolve().name
    app = create_app(engine, name)
    log(f"serving {name} (step {loaded.step}, {max_batch} slots, context {engine.context}) "
        f"on http://{host}:{port}/")
    reloader = None
    if reload_every > 0 and not counted(loaded):
        reloader = Reloader(engine, loaded.folder, checkpoint, reload_every, engine.served["checkpoint"]).start()
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
    finally:
        if reloader is not None:
            reloader.stop()
        engine.stop()
