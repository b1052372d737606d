"""``lmlab prepare`` and ``lmlab data stats|verify``: raw corpora to token shards, and a look at the result."""

from __future__ import annotations

import argparse
import json
import os
import sys

from lmlab.cli.common import log_unless_quiet, progress_on


def _fractions(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected fractions like 0.98,0.01,0.01, got {text!r}") from None


def _fields(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def cmd_prepare(args) -> int:
    from lmlab.data.prepare import prepare

    manifest = prepare(
        args.sources, args.out, workers=args.workers, overwrite=args.overwrite,
        progress=progress_on(args), log=log_unless_quiet(args),
        read=dict(format=args.format, fields=args.field, doc_sep=args.doc_sep, errors=args.errors,
                  doc_types=args.doc_types),
        clean=dict(nfkc=args.nfkc, min_chars=args.min_chars, max_chars=args.max_chars, dedup=not args.no_dedup),
        tokenizer=args.tokenizer, vocab_size=args.vocab_size, min_freq=args.min_freq, segmenter=args.segmenter,
        eos_token=args.eos_token, unit=args.unit, lang=args.lang, split=args.split, split_order=args.split_order,
        seed=args.seed, shard_tokens=args.shard_tokens, tokenizer_max_chars=args.tokenizer_max_chars,
    )
    print(_summary(args.out, manifest))
    return 0


def _summary(folder, manifest: dict) -> str:
    tokenizer = manifest["tokenizer"]
    lines = [f"{folder}: {tokenizer['kind']} tokenizer, vocabulary {tokenizer['vocab_size']:,}, "
             f"{manifest['dtype']} tokens, unit {manifest['unit']}"]
    lines.append(f"{'split':<6} {'documents':>10} {'units':>10} {'tokens':>13} {'shards':>6} {'bytes/token':>11}")
    for name, split in manifest["splits"].items():
        per_token = split["utf8_bytes"] / split["tokens"] if split["tokens"] else 0.0
        lines.append(f"{name:<6} {split['documents']:>10,} {split['units']:>10,} {split['tokens']:>13,} "
                     f"{len(split['shards']):>6} {per_token:>11.2f}")
    return "\n".join(lines)


def cmd_data_stats(args) -> int:
    import numpy as np

    from lmlab.data.shards import load_manifest, open_split
    from lmlab.tokenizers import load_tokenizer

    manifest = load_manifest(args.folder)
    if args.json:
        print(json.dumps({"tokenizer": manifest["tokenizer"], "splits": {
            name: {k: v for k, v in split.items() if k != "shards"} | {"shards": len(split["shards"])}
            for name, split in manifest["splits"].items()}, "report": manifest.get("report", {})}, indent=2))
        return 0
    print(_summary(args.folder, manifest))
    report = manifest.get("report", {})
    if report:
        print(f"documents read {report.get('documents_read', 0):,}, kept {report.get('documents_kept', 0):,}, "
              f"duplicates dropped {report.get('duplicates', 0):,}")
        for reason, count in {**report.get("dropped", {}), **report.get("reader_skipped", {})}.items():
            print(f"  dropped: {reason}: {count:,}")
    if args.top:
        tokenizer = load_tokenizer(os.path.join(args.folder, "tokenizer.json"))
        train = open_split(args.folder, "train", checksum=False)
        counts = np.zeros(tokenizer.vocab_size, dtype=np.int64)
        for array in train.arrays:
            counts += np.bincount(array, minlength=tokenizer.vocab_size)[: tokenizer.vocab_size]
        total = max(int(counts.sum()), 1)
        used = int((counts > 0).sum())
        print(f"train uses {used:,} of {tokenizer.vocab_size:,} vocabulary entries")
        if tokenizer.unk_id is not None:
            print(f"unknown-token rate in train: {counts[tokenizer.unk_id] / total:.4%}")
        print(f"most frequent {args.top} train tokens:")
        for index in np.argsort(-counts, kind="stable")[: args.top]:
            print(f"  {index:>7} {tokenizer.id_to_token(int(index))!r:<20} {counts[index] / total:8.4%}")
    return 0


def cmd_data_verify(args) -> int:
    from lmlab.data.shards import load_manifest, verify

    problems = verify(args.folder)
    if problems:
        for problem in problems:
            print(f"lmlab: error: {problem}", file=sys.stderr)
        return 1
    manifest = load_manifest(args.folder)
    shards = sum(len(s["shards"]) for s in manifest["splits"].values())
    tokens = sum(s["tokens"] for s in manifest["splits"].values())
    print(f"{args.folder}: ok, {shards} shards and {tokens:,} tokens match their checksums")
    return 0


def add_commands(commands) -> None:
    p = commands.add_parser("prepare", help="turn raw corpora into a tokenizer and token shards",
                            description="Read, clean, tokenize and shard corpora. A SOURCE is a file, folder, glob or "
                            "hf:SPEC; prefix it with train=, valid= or test= to take splits from the sources.")
    p.add_argument("sources", nargs="+", metavar="SOURCE")
    p.add_argument("--out", required=True, help="output folder")
    g = p.add_argument_group("reading")
    g.add_argument("--format", default="auto",
                   help="auto (default), text, wikitext, jsonl, json, csv, tsv, mediawiki, gigaword or hf")
    g.add_argument("--field", type=_fields, default=("text",),
                   help="JSON/CSV/HF field(s) holding the text, comma-separated; integers for headerless CSV")
    g.add_argument("--doc-sep", default="blank", help="plain text documents: blank (default), line or file")
    g.add_argument("--errors", default="strict", help="invalid UTF-8: strict (default), replace or skip")
    g.add_argument("--doc-types", type=_fields, default=("story",),
                   help="Gigaword DOC types to keep (default story; 'all' keeps every type)")
    g = p.add_argument_group("cleaning")
    g.add_argument("--nfkc", action="store_true", help="apply Unicode NFKC normalisation")
    g.add_argument("--min-chars", type=int, default=1, help="drop documents shorter than this")
    g.add_argument("--max-chars", type=int, default=0, help="drop documents longer than this (0: no limit)")
    g.add_argument("--no-dedup", action="store_true", help="keep exact duplicate documents")
    g = p.add_argument_group("tokenizer")
    g.add_argument("--tokenizer", default="bpe", help="char, word, bpe (default) or a tokenizer JSON file")
    g.add_argument("--vocab-size", type=int, default=0, help="vocabulary size (bpe default 8000; char/word: all)")
    g.add_argument("--min-freq", type=int, default=1, help="minimum count for a vocabulary entry")
    g.add_argument("--segmenter", default="whitespace", help="word tokenizer: whitespace (default) or jieba")
    g.add_argument("--eos-token", default=None, help="end token of a tokenizer.json that has no known one")
    g.add_argument("--tokenizer-max-chars", type=int, default=1_000_000_000,
                   help="train the tokenizer on at most this many characters (default 1e9)")
    g = p.add_argument_group("units and splits")
    g.add_argument("--unit", default="document", help="what the end token closes: document (default), paragraph, sentence")
    g.add_argument("--lang", default="auto", help="sentence splitting language: auto (default), en, zh")
    g.add_argument("--split", type=_fractions, default=(0.98, 0.01, 0.01), help="train,valid,test fractions")
    g.add_argument("--split-order", default="random", help="random (by document, seeded) or ordered (the last documents)")
    g.add_argument("--seed", type=int, default=0)
    g = p.add_argument_group("output")
    g.add_argument("--shard-tokens", type=int, default=100_000_000, help="tokens per shard (default 1e8)")
    g.add_argument("--workers", type=int, default=min(os.cpu_count() or 1, 8), help="worker processes")
    g.add_argument("--overwrite", action="store_true", help="replace data prepared with other options")
    g.add_argument("--quiet", action="store_true", help="print only the summary")
    p.set_defaults(func=cmd_prepare)

    data = commands.add_parser("data", help="inspect prepared data").add_subparsers(dest="data_command", metavar="COMMAND")
    p = data.add_parser("stats", help="token, document and shard counts of a prepared folder")
    p.add_argument("folder")
    p.add_argument("--top", type=int, default=0, help="also count tokens and show the N most frequent")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_data_stats)
    p = data.add_parser("verify", help="check every shard's size and checksum")
    p.add_argument("folder")
    p.set_defaults(func=cmd_data_verify)
