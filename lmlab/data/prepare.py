"""``lmlab prepare``: raw corpora → cleaned units → tokenizer → token shards.

The pipeline, one pass per step, each streaming with bounded memory:

1. (``--split-order ordered`` only) count documents, to know where splits fall;
2. train the tokenizer on the training split's text (skipped for a given
   tokenizer file; capped at ``tokenizer_max_chars`` characters);
3. read → parse markup, clean, segment and encode (in ``workers`` processes,
   in order) → de-duplicate and write shards (in this process).

Resuming: the state in ``OUT/.prepare/state.json`` is written at checkpoints.
A checkpoint happens when a split's open shard reaches ``shard_tokens``: every
open shard is closed (so shards hold whole units and may be shorter than the
limit), the new de-duplication keys are appended to ``.prepare/dedup.u64`` and
the state records how many documents are done. A re-run with the same options
skips those documents and continues; because checkpoints fall at the same
places, the finished shards are byte-identical to an uninterrupted run. The
manifest is written last; until it exists nothing treats the folder as data.
"""

from __future__ import annotations

import collections
import hashlib
import json
import multiprocessing
import os
import re
import shutil
import signal
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from lmlab.core.errors import ConfigError, DataError
from lmlab.core.io import read_json, remove_stale_temporaries, sha256_file, write_json
from lmlab.core.progress import progress_bar
from lmlab.data.clean import CleanOptions, clean_document, document_key
from lmlab.data.documents import WIKITEXT, RawDocument, ReadStats
from lmlab.data.readers import ReadOptions, expand_paths, read_source
from lmlab.data.shards import FORMAT, FORMAT_VERSION, MANIFEST, SPLITS, TOKENIZER, ShardWriter, token_dtype
from lmlab.tokenizers import KINDS, HFTokenizer, Tokenizer, load_tokenizer, tokenizer_from_dict, train_tokenizer
from lmlab.tokenizers.segment import split_sentences

UNITS = ("document", "paragraph", "sentence")
SPLIT_ORDERS = ("random", "ordered")
STATE_DIR = ".prepare"
_LABELLED = re.compile(r"^(train|valid|test)=(.+)$")


@dataclass(frozen=True)
class Source:
    spec: str
    split: str | None = None

    @classmethod
    def parse(cls, text: str) -> "Source":
        match = _LABELLED.match(text)
        return cls(match.group(2), match.group(1)) if match else cls(text)


@dataclass(frozen=True)
class PrepareOptions:
    sources: tuple[Source, ...]
    read: ReadOptions = ReadOptions()
    clean: CleanOptions = CleanOptions()
    tokenizer: str = "bpe"  # char | word | bpe | path to a tokenizer JSON
    vocab_size: int = 0  # 0: every symbol (char, word) or 8,000 (bpe)
    min_freq: int = 1
    segmenter: str = "whitespace"
    eos_token: str | None = None  # for a tokenizer.json without a known end token
    unit: str = "document"
    lang: str = "auto"
    split: tuple[float, float, float] = (0.98, 0.01, 0.01)
    split_order: str = "random"
    seed: int = 0
    shard_tokens: int = 100_000_000
    tokenizer_max_chars: int = 1_000_000_000
    chunk_docs: int = 1024

    def __post_init__(self):
        if not self.sources:
            raise ConfigError("give at least one source")
        labelled = {s.split is not None for s in self.sources}
        if len(labelled) > 1:
            raise ConfigError("either label every source with its split (train=PATH valid=PATH ...) or none")
        if self.unit not in UNITS:
            raise ConfigError(f"unknown --unit {self.unit!r}: expected {', '.join(UNITS)}")
        if self.split_order not in SPLIT_ORDERS:
            raise ConfigError(f"unknown --split-order {self.split_order!r}: expected {', '.join(SPLIT_ORDERS)}")
        if len(self.split) != 3 or any(f < 0 for f in self.split) or abs(sum(self.split) - 1) > 1e-6:
            raise ConfigError(f"--split must be three fractions train,valid,test adding up to 1, got {self.split}")
        if self.shard_tokens < 1:
            raise ConfigError(f"--shard-tokens must be >= 1, got {self.shard_tokens}")
        if self.chunk_docs < 1:
            raise ConfigError(f"chunk_docs must be >= 1, got {self.chunk_docs}")
        if self.lang not in ("auto", "en", "zh"):
            raise ConfigError(f"unknown --lang {self.lang!r}: expected auto, en or zh")
        if self.tokenizer in KINDS:
            minimum = {"char": 3, "word": 3, "bpe": 257}[self.tokenizer]
            if self.vocab_size and self.vocab_size < minimum:
                raise ConfigError(f"--vocab-size {self.vocab_size} is too small for the {self.tokenizer} tokenizer: "
                                  f"its special tokens (and bytes, for bpe) need at least {minimum}")
        elif not Path(self.tokenizer).exists():
            raise ConfigError(f"unknown tokenizer {self.tokenizer!r}: expected {', '.join(KINDS)} "
                              "or a path to a tokenizer JSON file")

    @property
    def labelled(self) -> bool:
        return self.sources[0].split is not None

    def fingerprint(self) -> str:
        """Identity of the output: every option that changes a byte of it."""
        data = asdict(self)
        if self.tokenizer not in KINDS:
            data["tokenizer"] = sha256_file(self.tokenizer)
        data.pop("chunk_docs")
        return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


# ---------------------------------------------------------------- documents and splits


def iter_documents(options: PrepareOptions, stats: ReadStats) -> Iterator[tuple[str | None, RawDocument]]:
    for source in options.sources:
        for document in read_source(source.spec, options.read, stats):
            yield source.split, document


def _unit_interval(seed: int, index: int) -> float:
    digest = hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2.0**64


class SplitAssigner:
    """Decides each document's split from its position: no state, so resuming is exact."""

    def __init__(self, options: PrepareOptions, total_documents: int | None = None):
        self.options = options
        fractions = np.cumsum(options.split)
        self.bounds = fractions
        if options.split_order == "ordered" and not options.labelled:
            assert total_documents is not None
            self.cuts = [round(total_documents * f) for f in fractions]

    def __call__(self, index: int, label: str | None) -> str:
        if label is not None:
            return label
        if self.options.split_order == "ordered":
            position = index
            cuts = self.cuts
        else:
            position = _unit_interval(self.options.seed, index)
            cuts = self.bounds
        for split, cut in zip(SPLITS, cuts):
            if position < cut:
                return split
        return "test"


# ---------------------------------------------------------------- per-document work (in workers)


@dataclass
class Processed:
    index: int
    split: str
    drop: str | None = None
    key: int = 0
    tokens: np.ndarray | None = None
    texts: list[str] | None = None
    units: int = 0
    utf8_bytes: int = 0
    chars: int = 0


_WORKER: dict = {}


def init_worker(config: dict) -> None:
    """Set up a worker process: options and (for encoding) the tokenizer."""
    _WORKER.clear()
    _WORKER["clean"] = CleanOptions(**config["clean"])
    _WORKER["unit"] = config["unit"]
    _WORKER["lang"] = config["lang"]
    _WORKER["tokenizer"] = tokenizer_from_dict(config["tokenizer"]) if config.get("tokenizer") else None
    _WORKER["dtype"] = np.dtype(config["dtype"]) if config.get("dtype") else None


def _paragraphs(document: RawDocument) -> tuple[str, ...]:
    if document.markup == WIKITEXT:
        from lmlab.data.wikimarkup import wikitext_to_paragraphs

        return tuple(wikitext_to_paragraphs(document.body, document.title))
    return document.body


def _units(paragraphs: tuple[str, ...], unit: str, lang: str) -> list[str]:
    if unit == "document":
        return ["\n".join(paragraphs)]
    if unit == "paragraph":
        return list(paragraphs)

    return [sentence for paragraph in paragraphs for sentence in split_sentences(paragraph, lang)]


def _encode(tokenizer: Tokenizer, texts: list[str], dtype: np.dtype) -> list[np.ndarray]:
    """Encode units in one batch (Hugging Face tokenizers use their threads on it)."""
    encoded = tokenizer.encode_batch(texts)
    eos = tokenizer.eos_id
    arrays = []
    for ids in encoded:
        array = np.empty(len(ids) + 1, dtype=dtype)
        array[:-1] = ids
        array[-1] = eos
        arrays.append(array)
    return arrays


def encode_items(tokenizer: Tokenizer, items: list[Processed], dtype: np.dtype) -> None:
    """Replace the texts of kept documents by their tokens (one batch for all of them)."""
    kept = [item for item in items if item.drop is None]
    arrays = iter(_encode(tokenizer, [text for item in kept for text in item.texts], dtype))
    for item in kept:
        pieces = [next(arrays) for _ in range(item.units)]
        item.tokens = np.concatenate(pieces) if len(pieces) != 1 else pieces[0]
        item.texts = None


def encode_in_background(items: Iterator[Processed], tokenizer: Tokenizer, dtype: np.dtype,
                         batch_chars: int = 1 << 20) -> Iterator[Processed]:
    """Encode documents' texts on a background thread, in order, while the next ones are read.

    For Hugging Face tokenizers: they release the GIL and use every core, so
    one big batch here beats one small batch in each worker process.
    """
    def batches():
        batch, chars = [], 0
        for item in items:
            batch.append(item)
            chars += item.chars
            if chars >= batch_chars:
                yield batch
                batch, chars = [], 0
        if batch:
            yield batch

    with ThreadPoolExecutor(1) as pool:
        pending: collections.deque = collections.deque()
        for batch in batches():
            pending.append((batch, pool.submit(encode_items, tokenizer, batch, dtype)))
            if len(pending) >= 2:
                batch, done = pending.popleft()
                done.result()
                yield from batch
        while pending:
            batch, done = pending.popleft()
            done.result()
            yield from batch


def process_chunk(chunk: list[tuple[int, str, RawDocument]]) -> list[Processed]:
    """Parse, clean, segment and (when a tokenizer is set) encode a chunk of documents."""
    options, tokenizer = _WORKER["clean"], _WORKER["tokenizer"]
    results = []
    for index, split, document in chunk:
        paragraphs, drop = clean_document(_paragraphs(document), options)
        item = Processed(index, split, drop)
        if drop is None:
            item.key = document_key(paragraphs) if options.dedup else 0
            item.texts = _units(paragraphs, _WORKER["unit"], _WORKER["lang"])
            item.units = len(item.texts)
            item.chars = sum(len(t) for t in item.texts)
            item.utf8_bytes = sum(len(t.encode("utf-8")) for t in item.texts) + item.units  # +1 per end token
        results.append(item)
    if tokenizer is not None:
        encode_items(tokenizer, results, _WORKER["dtype"])
    return results


def _size(document: RawDocument) -> int:
    body = document.body
    return len(body) if isinstance(body, str) else sum(len(p) for p in body)


def _chunks(items: Iterable[tuple[int, str, RawDocument]], max_docs: int, max_chars: int = 1 << 20) -> Iterator[list]:
    """Group documents into work units of about ``max_chars`` characters (or ``max_docs`` documents)."""
    chunk, chars = [], 0
    for item in items:
        chunk.append(item)
        chars += _size(item[2])
        if len(chunk) >= max_docs or chars >= max_chars:
            yield chunk
            chunk, chars = [], 0
    if chunk:
        yield chunk


def run_ordered(chunks: Iterable[list], config: dict, workers: int) -> Iterator[Processed]:
    """Process chunks in ``workers`` processes, yielding results in input order.

    At most ``2 × workers`` chunks are in flight, so memory stays bounded
    however large the corpus (``Pool.imap`` would read the whole input ahead).
    """
    if workers <= 1:
        init_worker(config)
        for chunk in chunks:
            yield from process_chunk(chunk)
        return
    context = multiprocessing.get_context("spawn")  # no fork after threads (tokenizers, datasets)
    with ProcessPoolExecutor(workers, mp_context=context, initializer=init_worker, initargs=(config,)) as pool:
        pending: collections.deque = collections.deque()
        try:
            for chunk in chunks:
                pending.append(pool.submit(process_chunk, chunk))
                if len(pending) >= 2 * workers:
                    yield from pending.popleft().result()
            while pending:
                yield from pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


# ---------------------------------------------------------------- report


@dataclass
class Report:
    documents_read: int = 0
    documents_kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    units: int = 0
    characters: int = 0

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    def lines(self, reader_counts: dict[str, int]) -> list[str]:
        out = [f"documents read: {self.documents_read:,}", f"documents kept: {self.documents_kept:,}"]
        out += [f"dropped, {reason}: {count:,}" for reason, count in sorted(self.dropped.items())]
        out.append(f"dropped, exact duplicates: {self.duplicates:,}")
        out += [f"reader skipped, {reason}: {count:,}" for reason, count in sorted(reader_counts.items())]
        return out


# ---------------------------------------------------------------- the job


class Prepare:
    def __init__(self, options: PrepareOptions, out, workers: int = 1, overwrite: bool = False,
                 progress: bool = False, log=print):
        self.options, self.out, self.workers = options, Path(out), max(1, workers)
        self.overwrite, self.progress, self.log = overwrite, progress, log
        self.state_dir = self.out / STATE_DIR
        self.fingerprint = options.fingerprint()

    # state ---------------------------------------------------------

    def _state_path(self) -> Path:
        return self.state_dir / "state.json"

    def _save_state(self, state: dict) -> None:
        write_json(self._state_path(), state)

    def _owned_files(self) -> list[Path]:
        names = {MANIFEST, TOKENIZER}
        return [p for p in self.out.iterdir() if p.name in names or re.fullmatch(r"(train|valid|test)-\d{5}\.bin(\..*)?", p.name)]

    def _start(self) -> dict | None:
        """Check the output folder; return a finished manifest, or None with the folder ready."""
        for source in self.options.sources:
            if not source.spec.startswith("hf:"):
                expand_paths(source.spec)  # fail on a missing path before any work
        if self.out.exists() and not self.out.is_dir():
            raise ConfigError(f"--out {self.out} exists and is not a folder")
        self.out.mkdir(parents=True, exist_ok=True)
        manifest_path = self.out / MANIFEST
        previous = None
        if manifest_path.exists():
            previous = read_json(manifest_path, "manifest")
        elif self._state_path().exists():
            previous = read_json(self._state_path(), "prepare state")
        same = isinstance(previous, dict) and previous.get("fingerprint") == self.fingerprint
        if previous is not None and not same and not self.overwrite:
            raise ConfigError(f"{self.out} holds data prepared with other options; "
                              "choose another --out or pass --overwrite")
        if same and manifest_path.exists() and not self.overwrite:
            shutil.rmtree(self.state_dir, ignore_errors=True)  # left if a kill came right after the manifest
            return previous
        if not same or manifest_path.exists():
            # Nothing of ours to resume from: clear what an earlier run left.
            for path in self._owned_files():
                path.unlink()
            shutil.rmtree(self.state_dir, ignore_errors=True)
        self.state_dir.mkdir(exist_ok=True)
        remove_stale_temporaries(self.out)
        remove_stale_temporaries(self.state_dir)
        return None

    def run(self) -> dict:
        finished = self._start()
        if finished is not None:
            self.log(f"{self.out} is already prepared with these options; nothing to do")
            return finished
        state = read_json(self._state_path(), "prepare state") if self._state_path().exists() else None
        if state is not None and not _usable_state(state):
            self.log(f"{self._state_path()} is damaged: starting over")
            state = None
        if not state or state.get("fingerprint") != self.fingerprint:
            state = {"fingerprint": self.fingerprint, "documents_done": 0, "total_documents": None,
                     "tokenizer_sha256": None, "shards": {s: [] for s in SPLITS}, "report": asdict(Report()),
                     "split_counts": {}, "dedup_keys": 0}
        self._drop_unrecorded_shards(state)

        if self.options.split_order == "ordered" and not self.options.labelled and state["total_documents"] is None:
            self.log("counting documents for the ordered split ...")
            state["total_documents"] = sum(1 for _ in iter_documents(self.options, ReadStats()))
            self._save_state(state)
        tokenizer = self._tokenizer(state)
        return self._write_shards(state, tokenizer)

    def _drop_unrecorded_shards(self, state: dict) -> None:
        """Shards written after the last checkpoint are redone: delete them."""
        recorded = {entry["file"] for entries in state["shards"].values() for entry in entries}
        for path in self._owned_files():
            if path.suffix == ".bin" and path.name not in recorded:
                path.unlink()

    # tokenizer -----------------------------------------------------

    def _tokenizer(self, state: dict) -> Tokenizer:
        path = self.out / TOKENIZER
        if state["tokenizer_sha256"] and path.exists() and sha256_file(path) == state["tokenizer_sha256"]:
            return load_tokenizer(path)
        options = self.options
        if options.tokenizer not in KINDS:
            tokenizer = load_tokenizer(options.tokenizer, options.eos_token)
        else:
            self.log(f"training the {options.tokenizer} tokenizer on the training split ...")
            texts = self._training_texts(state)
            tokenizer = train_tokenizer(options.tokenizer, texts, options.vocab_size, options.min_freq, options.segmenter)
            if texts.chars == 0:
                raise DataError("empty corpus: no training text survived reading and cleaning")
        tokenizer.save(path)
        state["tokenizer_sha256"] = sha256_file(path)
        self._save_state(state)
        self.log(f"tokenizer: {tokenizer.describe()}")
        return tokenizer

    def _training_texts(self, state: dict) -> "_TrainingTexts":
        return _TrainingTexts(self, state)

    def _config(self, tokenizer: Tokenizer | None) -> dict:
        config = {"clean": asdict(self.options.clean), "unit": self.options.unit, "lang": self.options.lang}
        if tokenizer is not None:
            config["tokenizer"] = tokenizer.to_dict()
            config["dtype"] = token_dtype(tokenizer.vocab_size).str
        return config

    def _processed(self, config: dict, state: dict, stats: ReadStats, skip: int = 0) -> Iterator[Processed]:
        assign = SplitAssigner(self.options, state["total_documents"])
        documents = ((index, assign(index, label), document)
                     for index, (label, document) in enumerate(iter_documents(self.options, stats)) if index >= skip)
        return run_ordered(_chunks(documents, self.options.chunk_docs), config, self.workers)

    # shards --------------------------------------------------------

    def _write_shards(self, state: dict, tokenizer: Tokenizer) -> dict:
        options = self.options
        dtype = token_dtype(tokenizer.vocab_size)
        counts = state["split_counts"] or {s: {"tokens": 0, "documents": 0, "units": 0, "utf8_bytes": 0,
                                                "characters": 0} for s in SPLITS}
        writers = {s: ShardWriter(self.out, s, dtype, len(state["shards"][s])) for s in SPLITS}
        report = Report(**state["report"])
        dedup_path = self.state_dir / "dedup.u64"
        seen = set(np.fromfile(dedup_path, dtype="<u8", count=state["dedup_keys"]).tolist()) if state["dedup_keys"] else set()
        new_keys: list[int] = []
        stats = ReadStats()
        done = state["documents_done"]
        if done:
            self.log(f"resuming after {done:,} documents")
        bar = progress_bar(self.progress, "prepare", " docs", initial=done)
        # Fault injection for the kill tests: SIGKILL this process after N documents.
        kill_after = int(os.environ.get("LMLAB_TEST_KILL_AFTER_DOCS", "0"))

        def checkpoint(documents_done: int) -> None:
            for split, writer in writers.items():
                entry = writer.close()
                if entry:
                    state["shards"][split].append(entry)
            if new_keys:
                with open(dedup_path, "r+b" if dedup_path.exists() else "wb") as handle:
                    handle.seek(state["dedup_keys"] * 8)
                    handle.write(np.array(new_keys, dtype="<u8").tobytes())
                    handle.truncate()
                    handle.flush()
                    os.fsync(handle.fileno())
                state["dedup_keys"] += len(new_keys)
                new_keys.clear()
            state.update(documents_done=documents_done, split_counts=counts, report=asdict(report))
            self._save_state(state)

        try:
            if isinstance(tokenizer, HFTokenizer):  # threads of its own: encode here, in batches
                items = encode_in_background(self._processed(self._config(None), state, stats, skip=done),
                                             tokenizer, dtype)
            else:  # pure Python: encode in the worker processes
                items = self._processed(self._config(tokenizer), state, stats, skip=done)
            for item in items:
                report.documents_read += 1
                bar.update(1)
                if kill_after and report.documents_read >= kill_after:
                    os.kill(os.getpid(), signal.SIGKILL)
                if item.drop:
                    report.drop(item.drop)
                    continue
                if options.clean.dedup:
                    if item.key in seen:
                        report.duplicates += 1
                        continue
                    seen.add(item.key)
                    new_keys.append(item.key)
                report.documents_kept += 1
                report.units += item.units
                report.characters += item.chars
                split_counts = counts[item.split]
                split_counts["tokens"] += len(item.tokens)
                split_counts["documents"] += 1
                split_counts["units"] += item.units
                split_counts["utf8_bytes"] += item.utf8_bytes
                split_counts["characters"] += item.chars
                writers[item.split].append(item.tokens)
                if writers[item.split].tokens >= options.shard_tokens:
                    checkpoint(item.index + 1)
        except BaseException:
            for writer in writers.values():
                writer.abort()
            raise
        finally:
            bar.close()
        if report.documents_read == 0 and done == 0:
            raise DataError("empty corpus: the sources hold no documents")
        if counts["train"]["tokens"] == 0:
            raise DataError("empty corpus: no training document survived cleaning ("
                            + "; ".join(report.lines(stats.counts)) + ")")
        checkpoint(done + report.documents_read)
        manifest = self._manifest(state, tokenizer, dtype, counts, report, stats)
        write_json(self.out / MANIFEST, manifest)
        shutil.rmtree(self.state_dir, ignore_errors=True)
        for line in report.lines(stats.counts):
            self.log(line)
        for warning in stats.warnings:
            self.log(f"warning: {warning}")
        return read_json(self.out / MANIFEST, "manifest")  # as JSON types, the same as a later read

    def _manifest(self, state, tokenizer, dtype, counts, report: Report, stats: ReadStats) -> dict:
        options = self.options
        splits = {}
        for split in SPLITS:
            splits[split] = {**counts[split], "shards": state["shards"][split]}
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "fingerprint": self.fingerprint,
            "sources": [{"spec": s.spec, "split": s.split} for s in options.sources],
            "options": {
                "read": asdict(options.read), "clean": asdict(options.clean), "unit": options.unit,
                "lang": options.lang, "split": None if options.labelled else list(options.split),
                "split_order": None if options.labelled else options.split_order, "seed": options.seed,
                "shard_tokens": options.shard_tokens,
            },
            "tokenizer": {"file": TOKENIZER, "kind": tokenizer.kind, "vocab_size": tokenizer.vocab_size,
                          "eos_id": tokenizer.eos_id, "eos_token": tokenizer.eos_token,
                          "sha256": state["tokenizer_sha256"]},
            "dtype": dtype.str,
            "unit": options.unit,
            "utf8_bytes_note": "UTF-8 bytes of each unit's text plus one per end token",
            "splits": splits,
            "report": {**asdict(report), "reader_skipped": stats.counts},
        }


def _usable_state(state) -> bool:
    """Whether a resume state has the shape this module writes (damage means starting over)."""
    if not isinstance(state, dict) or not isinstance(state.get("shards"), dict):
        return False
    counts = ("documents_done", "dedup_keys")
    if any(not isinstance(state.get(k), int) or isinstance(state.get(k), bool) or state[k] < 0 for k in counts):
        return False
    shards = [state["shards"].get(split) for split in SPLITS]
    return (all(isinstance(entries, list) and all(isinstance(e, dict) and isinstance(e.get("file"), str)
                                                  for e in entries) for entries in shards)
            and isinstance(state.get("report"), dict) and set(state["report"]) <= set(Report.__dataclass_fields__)
            and isinstance(state.get("split_counts"), dict)
            and isinstance(state.get("total_documents"), (int, type(None)))
            and isinstance(state.get("tokenizer_sha256"), (str, type(None))))


class _TrainingTexts:
    """The training split's unit texts, streamed once into the tokenizer trainer."""

    def __init__(self, job: Prepare, state: dict):
        self.job, self.state, self.chars = job, state, 0

    def __iter__(self) -> Iterator[str]:
        limit = self.job.options.tokenizer_max_chars
        seen: set[int] = set()
        dedup = self.job.options.clean.dedup
        for item in self.job._processed(self.job._config(None), self.state, ReadStats()):
            if item.drop or item.split != "train" or (dedup and item.key in seen):
                continue
            seen.add(item.key)
            for text in item.texts:
                yield text
                self.chars += len(text)
            if self.chars >= limit:
                return


def prepare(sources, out, workers: int = 1, overwrite: bool = False, progress: bool = False,
            log=lambda message: None, **options) -> dict:
    """Python API for ``lmlab prepare``; returns the manifest.

    ``sources`` are strings as on the command line (``train=PATH`` labels a
    split); ``options`` are :class:`PrepareOptions` fields, with ``read`` and
    ``clean`` given as dicts of :class:`ReadOptions` / :class:`CleanOptions` fields.
    """
    read = ReadOptions(**options.pop("read", {}))
    clean = CleanOptions(**options.pop("clean", {}))
    if "split" in options:
        options["split"] = tuple(options["split"])
    parsed = PrepareOptions(tuple(Source.parse(s) for s in ([sources] if isinstance(sources, str) else sources)),
                            read, clean, **options)
    return Prepare(parsed, out, workers, overwrite, progress, log).run()
