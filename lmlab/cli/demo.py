"""``lmlab demo``: the newcomer's tour — prepare, train, evaluate, generate, saying each step.

Tiny Shakespeare at character level with nanoGPT's CPU recipe (4 layers, 4
heads, 128 wide, block 64, batch 12, 2,000 steps): a few minutes on two cores.
Re-running it continues an interrupted run and reuses a finished one.
"""

from __future__ import annotations

from pathlib import Path

from lmlab.cli.common import progress_on
from lmlab.core.errors import DataError

SHIPPED_TEXT = Path(__file__).resolve().parent / "corpora" / "tinyshakespeare.txt.xz"  # package data
SHARED_TEXT = Path("tinyshakespeare") / "input.txt"  # the same text in a data folder such as ../shared/data


def find_text(text: str | None = None, data: str | None = None) -> Path:
    """The corpus: ``text`` if given, else Tiny Shakespeare in the ``data`` folder, else the copy shipped with lmlab."""
    if text:
        candidate = Path(text)
    elif data:
        candidate = Path(data) / SHARED_TEXT
    else:
        candidate = SHIPPED_TEXT
    if not candidate.is_file():
        raise DataError(f"{candidate}: no such file" + (" (the shipped corpus is missing: reinstall lmlab)"
                                                        if candidate == SHIPPED_TEXT else ""))
    return candidate


def run_demo(out="runs/demo", text: str | None = None, steps: int = 2000, say=print, progress: bool = False,
             data: str | None = None) -> dict:
    from lmlab.data.prepare import prepare
    from lmlab.evaluation.perplexity import evaluate_run
    from lmlab.generate.decoder import generate_text
    from lmlab.runs.load import load_run
    from lmlab.generate.samplers import SamplerConfig
    from lmlab.training.config import TrainConfig
    from lmlab.training.trainer import train

    out = Path(out)
    source = find_text(text, data)
    say(f"1/4 prepare: {source} -> {out / 'data'} (characters; the last tenth of the speeches for validation)")
    manifest = prepare(str(source), out / "data", tokenizer="char", split=(0.9, 0.1, 0.0), split_order="ordered",
                       clean={"dedup": False}, workers=1)
    say(f"    {manifest['splits']['train']['tokens']:,} training and {manifest['splits']['valid']['tokens']:,} "
        f"validation tokens, vocabulary {manifest['tokenizer']['vocab_size']}")
    run = out / "run"
    if (run / "results.json").exists():
        say(f"2/4 train: {run} is already trained; reusing it (delete it to train again)")
    else:
        resume = (run / "config.json").exists()
        say(f"2/4 train: nanoGPT's CPU Shakespeare recipe for {steps:,} steps -> {run}"
            + (" (resuming)" if resume else ""))
        config = TrainConfig(data=str(out / "data"), shape="shakespeare-char", max_steps=steps,
                             warmup_steps=min(100, steps - 1), eval_interval=max(steps // 4, 1))
        train(config, run, resume=resume, progress=progress, log=lambda m: say("    " + m))
    result = evaluate_run(run, split="valid")
    say(f"3/4 evaluate on the validation text: loss {result['loss']:.4f}, perplexity {result['perplexity']:.2f}, "
        f"{result['bits_per_byte']:.3f} bits per byte")
    loaded = load_run(run)
    say("4/4 generate (temperature 0.8, 300 characters, prompt 'ROMEO:'):\n")
    sample = generate_text(loaded.model, loaded.tokenizer, ["ROMEO:"], 300, SamplerConfig(temperature=0.8), seed=0,
                           stop_at_eos=False)[0]
    say("ROMEO:" + sample.replace("<eos>", "\n\n"))
    return {"valid": result, "sample": sample}


def cmd_demo(args) -> int:
    run_demo(args.out, args.text, args.steps, say=print, progress=progress_on(args),
             data=args.data)
    return 0


def add_commands(commands) -> None:
    p = commands.add_parser("demo", help="prepare Tiny Shakespeare, train a small model, evaluate and generate")
    p.add_argument("--out", default="runs/demo", help="folder for the data and the run (default runs/demo)")
    p.add_argument("--text", help="a plain-text corpus to use instead of the Tiny Shakespeare shipped with lmlab")
    p.add_argument("--data", help="a data folder holding tinyshakespeare/input.txt (e.g. ../shared/data)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--steps", type=int, default=2000, help="training steps (default 2000)")
    p.set_defaults(func=cmd_demo)
