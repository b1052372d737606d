"""``lmlab serve``: a run's model behind an OpenAI-compatible HTTP API (docs/serving.md)."""

from __future__ import annotations

from lmlab.cli.common import CHECKPOINT_HELP, log
from lmlab.core.errors import ConfigError


def add_commands(commands) -> None:
    p = commands.add_parser("serve", help="an OpenAI-compatible HTTP server and playground for a run",
                            description="Serves a run's model (transformer, rnn, gated_cnn) on OpenAI's "
                            "/v1/completions and /v1/chat/completions, with continuous batching, streaming, "
                            "/metrics and a web playground at / (docs/serving.md).")
    p.add_argument("run")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--checkpoint", default="best", help=CHECKPOINT_HELP)
    p.add_argument("--max-batch", type=int, default=8, help="sequences decoded together (slots)")
    p.add_argument("--max-queue", type=int, default=64, help="requests that may wait for a slot; past it, 429")
    p.add_argument("--context", type=int, help="positions per slot (default: the model's block size; an "
                   "n-gram: 4096, a bound on prompt + new tokens)")
    p.add_argument("--model-name", help="the model's id in the API (default: the run folder's name)")
    p.add_argument("--reload-every", type=float, default=2.0, metavar="SECONDS",
                   help="look this often whether a run still training has a new checkpoint, and serve it "
                   "(0: never; default 2)")
    p.set_defaults(func=cmd_serve)


def cmd_serve(args) -> int:
    from lmlab.serve import serve

    for name in ("max_batch", "port"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if not args.reload_every >= 0:
        raise ConfigError(f"--reload-every must be >= 0, got {args.reload_every}")
    if args.max_queue < 0:
        raise ConfigError(f"--max-queue must be >= 0, got {args.max_queue}")
    serve(args.run, args.host, args.port, args.checkpoint, args.max_batch, args.max_queue, args.context,
          args.model_name, args.reload_every, log=log)
    return 0
