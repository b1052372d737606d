"""Fuzzing every reader of untrusted input: it parses, or it raises a clean LmlabError.

Two sources of bad input: ``hypothesis`` (structured: JSON values, YAML/TOML
documents, nesting, odd types) and seeded byte mutation of real samples from
the shared data (flipped, deleted, inserted and duplicated bytes, truncation,
format tokens spliced in). Each case runs under a time limit and a memory
ceiling, so a hang or unbounded memory fails the test as surely as a stray
exception. ``LMLAB_SOAK=N`` multiplies the number of cases by N / 10 (at least
1); the counts each test tried are printed with ``-s``.
"""

from __future__ import annotations

import bz2
import contextlib
import copy
import gzip
import json
import os
import random
import resource
import signal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lmlab.data.documents import ReadStats
from lmlab.data.readers import ReadOptions, read_source
from lmlab.core.errors import LmlabError
from tests.conftest import data_path

SOAK = int(os.environ.get("LMLAB_SOAK", "0"))
SCALE = max(SOAK / 10, 1)
SEED = int(os.environ.get("LMLAB_FAULT_SEED", "9"))
SECONDS = 20  # per case: far above any legitimate case here (milliseconds)
EXTRA_MEMORY = 1 << 30  # per case: address space it may add to what the process already has
TRIED: dict[str, int] = {}


def cases(n: int) -> int:
    return int(n * SCALE)


def report(test: str, **figures) -> None:
    print(f"\n{test}: {json.dumps(figures)}")
    if os.environ.get("LMLAB_FAULT_REPORT"):
        with open(os.environ["LMLAB_FAULT_REPORT"], "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"test": test, "soak": SOAK, "seed": SEED, **figures}) + "\n")


class CaseTimeout(Exception):
    pass


def _vm_size() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    return 0


@contextlib.contextmanager
def bounded(name: str):
    """Run one case with a time limit (SIGALRM) and an address-space ceiling; count it under ``name``."""
    def expire(*_):
        raise CaseTimeout(f"{name}: a case took more than {SECONDS} s")

    previous = signal.signal(signal.SIGALRM, expire)
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    ceiling = _vm_size() + EXTRA_MEMORY
    resource.setrlimit(resource.RLIMIT_AS, (min(ceiling, hard) if hard != resource.RLIM_INFINITY else ceiling, hard))
    signal.alarm(SECONDS)
    try:
        yield
    finally:
        signal.alarm(0)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
        signal.signal(signal.SIGALRM, previous)
        TRIED[name] = TRIED.get(name, 0) + 1


def outcome(function, *args, **kwargs) -> str:
    """``"parsed"`` or ``"refused"`` (an LmlabError); anything else propagates and fails the test."""
    try:
        function(*args, **kwargs)
        return "parsed"
    except LmlabError as error:
        assert str(error) and "\n" not in str(error).strip(), repr(error)  # one line, not empty
        return "refused"


# ---------------------------------------------------------------- byte mutation

SPLICES = [b"<", b">", b"&", b'"', b"{", b"}", b"[", b"]", b"\n", b"\r", b"\x00", b"\xff", b"\xc3", b"\xef\xbb\xbf",
           b"<DOC>", b"</DOC>", b"<P>", b"</TEXT>", b"<page>", b"</page>", b"<ns/>", b"<title/>", b"&AMP;", b"&#0;",
           b"&#x110000;", b"<![CDATA[", b'<!DOCTYPE x [<!ENTITY a "aaaaaaaaaa">]>', b" = Title = ", b"\\data\\",
           b"\\end\\", b"\\1-grams:", b"ngram 1=3", b"nan", b"-inf", b"1e999", b"\x1c", b"\xc2\x85", b"[" * 2000,
           b"{\"a\":" * 2000]


def mutate(data: bytes, rng: random.Random) -> bytes:
    data = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        at = rng.randrange(len(data) + 1)
        operation = rng.randrange(6)
        if operation == 0 and data:
            data[min(at, len(data) - 1)] = rng.randrange(256)
        elif operation == 1:
            del data[at:at + rng.randint(1, 64)]
        elif operation == 2:
            data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        elif operation == 3:
            del data[at:]  # truncated
        elif operation == 4 and data:
            source = rng.randrange(len(data))
            data[at:at] = data[source:source + rng.randint(1, 300)]
        else:
            data[at:at] = rng.choice(SPLICES)
    return bytes(data)


def gigaword_sample(text: bytes) -> bytes:
    """LDC Gigaword SGML around real Shakespeare paragraphs (no Gigaword text is shared here)."""
    docs = []
    for i in range(6):
        paragraph = text[i * 160:(i + 1) * 160].replace(b"\n", b" ")
        kind = b"story" if i % 3 else b"advis"
        docs.append(b'<DOC id="AFP_ENG_1994050%d.00%d" type="%s" >\n<HEADLINE>\nHeadline %d &AMP; more\n</HEADLINE>\n'
                    b"<DATELINE>\nPARIS, May 1 (AFP)\n</DATELINE>\n<TEXT>\n<P>\n%s\n</P>\n<P>\nA &LT;quoted&GT; part.\n"
                    b"</P>\n</TEXT>\n</DOC>\n" % (i, i, kind, i, paragraph))
    return b"".join(docs)


@pytest.fixture(scope="module")
def samples() -> dict[str, tuple[bytes, dict]]:
    """Real samples, each with the read options it needs."""
    text = data_path("tinyshakespeare", "input.txt").read_bytes()[:3000]
    wikitext = data_path("wikitext-2", "valid.txt").read_bytes()[:3000]
    poems = json.loads(data_path("chinese-poetry", "tangshi_300.json").read_text(encoding="utf-8"))[:8]
    dump = bz2.decompress(data_path("wikipedia-xml", "enwiki-table-markup.xml.bz2").read_bytes())
    cut = dump.find(b"</page>", 4000) + len(b"</page>")
    xml = dump[:cut] + b"\n</mediawiki>\n"
    news = data_path("news-agnews", "test.csv").read_bytes()[:2500]
    poems_field = {"fields": ("paragraphs",)}
    return {
        "text.txt": (text, {}),
        "wikitext.txt": (wikitext, {}),
        "poems.jsonl": ("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in poems).encode(), poems_field),
        "poems.json": (json.dumps(poems, ensure_ascii=False).encode(), poems_field),
        "dump.xml": (xml, {}),
        "dump.xml.bz2": (bz2.compress(xml), {}),
        "text.txt.gz": (gzip.compress(text), {}),
        "news.csv": (news, {"fields": ("1", "2")}),
        "gigaword.sgml": (gigaword_sample(text), {"format": "gigaword", "doc_types": ("all",)}),
    }


def read_everything(path: Path, options: dict) -> None:
    """What prepare does with a source before tokenizing: read it, and reduce wiki markup."""
    from lmlab.data.wikimarkup import wikitext_to_paragraphs

    for document in read_source(str(path), ReadOptions(**options), ReadStats()):
        if document.markup == "wikitext":
            wikitext_to_paragraphs(document.body, document.title)


def test_readers_on_mutated_real_samples(samples, tmp_path):
    rng = random.Random(f"{SEED}-readers")
    for name, (data, options) in samples.items():  # the unmutated samples parse
        (tmp_path / name).write_bytes(data)
        assert outcome(read_everything, tmp_path / name, options) == "parsed", name
    results: dict[str, dict[str, int]] = {}
    for _ in range(cases(1200)):
        name = rng.choice(list(samples))
        data, options = samples[name]
        path = tmp_path / name
        policy = rng.choice(["strict", "replace", "skip"])
        if name.endswith((".bz2", ".gz")) and rng.random() < 0.5:  # corrupt the compressed stream itself
            path.write_bytes(mutate(_compressed(name, data), rng))
        else:
            plain = mutate(data, rng)
            path.write_bytes(_compressed(name, plain))
        with bounded(f"reader {name}"):
            result = outcome(read_everything, path, {**options, "errors": policy})
        results.setdefault(name, {}).setdefault(result, 0)
        results[name][result] += 1
    report("readers, mutated real samples", cases=sum(sum(r.values()) for r in results.values()), by_file=results)


def _compressed(name: str, data: bytes) -> bytes:
    if name.endswith(".bz2"):
        return bz2.compress(data)
    if name.endswith(".gz"):
        return gzip.compress(data)
    return data


def test_truncated_and_corrupt_bz2_dump(tmp_path):
    """The real Wikipedia dump cut at random places, or with bytes flipped: a clean error naming how far it got."""
    dump = data_path("wikipedia-xml", "enwiki-table-markup.xml.bz2").read_bytes()
    rng = random.Random(f"{SEED}-bz2")
    refused = 0
    for _ in range(cases(40)):
        data = bytearray(dump[:rng.randrange(1, len(dump))])
        if rng.random() < 0.5:
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        (tmp_path / "cut.xml.bz2").write_bytes(bytes(data))
        with bounded("bz2 dump"):
            try:
                read_everything(tmp_path / "cut.xml.bz2", {})
            except LmlabError as error:
                refused += 1
                assert "cut.xml.bz2" in str(error)
    assert refused == cases(40)  # every cut loses the end of the stream: none may pass for a whole dump
    report("bz2 dump, truncated or flipped", cases=cases(40), refused=refused)


# ---------------------------------------------------------------- hypothesis: structured input

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=20)
FIELDS = st.sampled_from(["text", "paragraphs", "title", "0", "1"])
FUZZ = settings(max_examples=cases(40), deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@FUZZ
@given(records=st.lists(JSON_VALUES, max_size=6), field=FIELDS, depth=st.integers(0, 5000))
def test_jsonl_and_json_readers(tmp_path_factory, records, field, depth):
    folder = tmp_path_factory.mktemp("json")
    lines = [json.dumps(r) for r in records] + (["[" * depth + "]" * depth] if depth else [])
    (folder / "x.jsonl").write_text("\n".join(lines), encoding="utf-8", errors="surrogatepass")
    (folder / "x.json").write_text("[" + ",".join(lines) + "]", encoding="utf-8", errors="surrogatepass")
    for name in ("x.jsonl", "x.json"):
        with bounded(f"hypothesis {name}"):
            outcome(read_everything, folder / name, {"fields": (field,)})


WIKI_PAGE = ("<mediawiki><page><title>{title}</title><ns>{ns}</ns>{redirect}<revision><text>{text}</text>"
             "</revision></page></mediawiki>")


@FUZZ
@given(title=st.text(max_size=20), ns=st.sampled_from(["0", "", "1", " 0 ", "x"]),
       redirect=st.sampled_from(["", "<redirect/>", '<redirect title="X"/>']),
       text=st.lists(st.sampled_from(list("ab [[]]{{}}|=<>'&;#*:\n") + ["<ref>", "</ref>", "{|", "|}", "<!--", "-->",
                                                                       "&amp;", "[http://x ", "#REDIRECT"]),
                     max_size=80).map("".join))
def test_mediawiki_reader(tmp_path_factory, title, ns, redirect, text):
    from xml.sax.saxutils import escape

    folder = tmp_path_factory.mktemp("wiki")
    page = WIKI_PAGE.format(title=escape(title), ns=ns, redirect=redirect, text=escape(text))
    (folder / "page.xml").write_text(page, encoding="utf-8", errors="surrogatepass")
    with bounded("hypothesis mediawiki"):
        outcome(read_everything, folder / "page.xml", {})


@FUZZ
@given(lines=st.lists(st.sampled_from(['<DOC id="a" type="story">', '<DOC id="b" type="advis">', "<DOC>", "</DOC>",
                                        "<HEADLINE>", "</HEADLINE>", "<TEXT>", "</TEXT>", "<P>", "</P>", "",
                                        "Some words &AMP; more.", "&#x110000; &bogus; &LT;"]) | st.text(max_size=30),
                      max_size=25))
def test_gigaword_reader(tmp_path_factory, lines):
    folder = tmp_path_factory.mktemp("giga")
    (folder / "news.sgml").write_text("\n".join(lines), encoding="utf-8", errors="surrogatepass")
    with bounded("hypothesis gigaword"):
        outcome(read_everything, folder / "news.sgml", {"format": "gigaword", "doc_types": ("all",)})


def test_pathological_wikitext_takes_bounded_time():
    """Thousands of unclosed tags, comments or links made mwparserfromhell quadratic (24,000: minutes)."""
    import time

    from lmlab.data.wikimarkup import wikitext_to_paragraphs

    for opener in ("<ref>", "[http://example.org ", "<div>a\n", "<!--", "<ref>a [http://x b <div>\n"):
        start = time.perf_counter()
        with bounded("pathological wikitext"):
            wikitext_to_paragraphs(opener * 24_000 + "\n\nThe end.", "T")
        assert time.perf_counter() - start < 5, opener


# ---------------------------------------------------------------- tokenizer files


@pytest.fixture(scope="module")
def tokenizer_documents() -> dict[str, dict]:
    from lmlab.tokenizers import train_tokenizer

    lines = data_path("tinyshakespeare", "input.txt").read_text(encoding="utf-8")[:20_000].splitlines()
    tokenizers = {kind: train_tokenizer(kind, lines, 300 if kind == "bpe" else 0) for kind in ("char", "word", "bpe")}
    documents = {kind: tokenizer.to_dict() for kind, tokenizer in tokenizers.items()}
    documents["tokenizer.json"] = json.loads(tokenizers["bpe"].hf_json())  # a Hugging Face tokenizer.json
    return documents


def use_tokenizer(path: Path) -> None:
    from lmlab.tokenizers import load_tokenizer

    tokenizer = load_tokenizer(path)
    ids = tokenizer.encode("First Citizen: we are accounted poor citizens, 床前明月光")
    tokenizer.decode(ids)
    tokenizer.encode_batch(["a b", ""])
    [tokenizer.id_to_token(i) for i in range(min(tokenizer.vocab_size, 3))]
    tokenizer.eos_id


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _paths(child, prefix + (key,))
    elif isinstance(value, list):
        for index, child in enumerate(value[:12]):
            yield from _paths(child, prefix + (index,))


@FUZZ
@given(data=st.data())
def test_tokenizer_files(tokenizer_documents, tmp_path_factory, data):
    kind = data.draw(st.sampled_from(sorted(tokenizer_documents)))
    document = copy.deepcopy(tokenizer_documents[kind])
    for _ in range(data.draw(st.integers(1, 3))):
        where = data.draw(st.sampled_from(list(_paths(document))))
        if not where:
            document = data.draw(JSON_VALUES)
            break
        parent = document
        for key in where[:-1]:
            parent = parent[key]
        if data.draw(st.booleans()):
            del parent[where[-1]]
        else:
            parent[where[-1]] = data.draw(JSON_VALUES)
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    path.write_text(json.dumps(document), encoding="utf-8", errors="surrogatepass")
    with bounded(f"hypothesis tokenizer {kind}"):
        outcome(use_tokenizer, path)


def test_tokenizer_files_mutated_as_bytes(tokenizer_documents, tmp_path):
    rng = random.Random(f"{SEED}-tokenizer-bytes")
    for _ in range(cases(150)):
        kind = rng.choice(sorted(tokenizer_documents))
        (tmp_path / "tokenizer.json").write_bytes(mutate(json.dumps(tokenizer_documents[kind]).encode(), rng))
        with bounded(f"tokenizer bytes {kind}"):
            outcome(use_tokenizer, tmp_path / "tokenizer.json")


# ---------------------------------------------------------------- config files

YAML_CONFIG = (b"data: runs/data/shakespeare\nshape: debug\nbatch_size: 12\nlearning_rate: 1.0e-3\nmodel:\n"
               b"  n_layer: 2\n  d_model: 64\n  dropout: 0.1\nmax_steps: 200\nwarmup_steps: 10\n")
TOML_CONFIG = (b'data = "runs/data/shakespeare"\nshape = "debug"\nbatch_size = 12\nlearning_rate = 1e-3\n'
               b"max_steps = 200\nwarmup_steps = 10\n[model]\nn_layer = 2\nd_model = 64\n")
CONFIG_SPLICES = [b"!!python/object/apply:os.system ['true']", b"&a [*a, *a]", b"*a", b"~", b".nan", b".inf",
                  b"1e999", b"-1", b"true", b"[1, 2]", b"{x: 1}", b"model: 5", b"family: [rnn]", b"family: cnn",
                  b"precision: fp8", b"model:\n  n_layer: -1", b"model:\n  vocab_size: x", b"model:\n  __class__: x",
                  b"? [a]\n: 1", b"1: 2", b"null: 3", b"skip_bad_batches: maybe", b"max_seconds: .inf"]


def use_config(path: Path) -> None:
    """Read and validate a config file (the model section is checked by the model's config class, with Keras)."""
    from lmlab.training.config import build_config

    build_config(path)


def test_config_files_mutated(tmp_path):
    rng = random.Random(f"{SEED}-config")
    outcomes = {"parsed": 0, "refused": 0}
    for i in range(cases(400)):
        suffix, source = (".yaml", YAML_CONFIG) if i % 2 else (".toml", TOML_CONFIG)
        data = bytearray(source)
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(data) + 1)
            if rng.random() < 0.6:
                data[at:at] = rng.choice(CONFIG_SPLICES) + (b"\n" if rng.random() < 0.5 else b"")
            else:
                data[at:at + rng.randint(0, 12)] = bytes(rng.randrange(256) for _ in range(rng.randint(0, 3)))
        path = tmp_path / f"run{suffix}"
        path.write_bytes(bytes(data))
        with bounded(f"config {suffix}"):
            outcomes[outcome(use_config, path)] += 1
    assert outcomes["parsed"] > 0 and outcomes["refused"] > 0
    report("config files, mutated", cases=cases(400), outcomes=outcomes)


def test_model_vocab_size_must_be_an_integer():
    from lmlab.models import registry
    from lmlab.core.errors import ConfigError

    for value in ("x", None, [1], 3.5, True):  # refused before the model's module (and Keras) is even loaded
        with pytest.raises(ConfigError, match="model.vocab_size must be an integer"):
            registry.model_config("transformer", "debug", 67, {"vocab_size": value})


@FUZZ
@given(document=st.dictionaries(st.sampled_from(["data", "shape", "family", "batch_size", "learning_rate", "model",
                                                  "precision", "max_steps", "warmup_steps", "beta1", "seed",
                                                  "skip_bad_batches", "max_seconds", "bogus"])
                                 | st.text(max_size=12) | st.integers() | st.none(), JSON_VALUES, max_size=6))
def test_config_documents(tmp_path_factory, document):
    import yaml

    folder = tmp_path_factory.mktemp("config")
    (folder / "run.yaml").write_text(yaml.safe_dump(document), encoding="utf-8", errors="surrogatepass")
    with bounded("hypothesis config"):
        outcome(use_config, folder / "run.yaml")


# ---------------------------------------------------------------- ARPA files, manifests, checkpoints


@pytest.fixture(scope="module")
def arpa_sample(tmp_path_factory) -> tuple[bytes, Path]:
    from lmlab.models.ngram import NGramConfig, NGramLM, read_sentences

    folder = tmp_path_factory.mktemp("arpa")
    lines = data_path("wikitext-2", "valid.txt").read_text(encoding="utf-8").splitlines()[:40]
    (folder / "sentences.txt").write_text("\n".join(lines), encoding="utf-8")
    model = NGramLM.train(read_sentences(folder / "sentences.txt", replace=[("<unk>", "<oov>")]), NGramConfig(order=3))
    model.to_arpa(folder / "model.arpa")
    return (folder / "model.arpa").read_bytes(), folder / "sentences.txt"


def use_arpa(path: Path, sentences: Path) -> None:
    from lmlab.models.ngram import NGramLM, read_sentences

    NGramLM.from_arpa(path).perplexity(read_sentences(sentences))


def test_arpa_files_mutated(arpa_sample, tmp_path):
    data, sentences = arpa_sample
    assert outcome(use_arpa, _write(tmp_path / "ok.arpa", data), sentences) == "parsed"
    rng = random.Random(f"{SEED}-arpa")
    outcomes = {"parsed": 0, "refused": 0}
    for _ in range(cases(300)):
        mutated = mutate(data, rng)
        if rng.random() < 0.5:  # move a whole line elsewhere: sections out of order, n-grams in the wrong one
            lines = mutated.split(b"\n")
            lines.insert(rng.randrange(len(lines) + 1), lines.pop(rng.randrange(len(lines))))
            mutated = b"\n".join(lines)
        path = tmp_path / ("x.arpa.gz" if rng.random() < 0.2 else "x.arpa")
        _write(path, gzip.compress(mutated)[:None if rng.random() < 0.7 else rng.randrange(10, 300)]
               if path.suffix == ".gz" else mutated)
        with bounded("arpa"):
            outcomes[outcome(use_arpa, path, sentences)] += 1
    report("ARPA files, mutated", cases=cases(300), outcomes=outcomes)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    from lmlab.data import prepare

    folder = tmp_path_factory.mktemp("prepared")
    (folder / "in.txt").write_bytes(data_path("tinyshakespeare", "input.txt").read_bytes()[:20_000])
    prepare(str(folder / "in.txt"), folder / "out", tokenizer="char", shard_tokens=4000)
    return folder / "out"


def use_prepared(folder: Path) -> None:
    from lmlab.data import load_manifest, open_split, verify

    load_manifest(folder)
    verify(folder)
    for split in ("train", "valid", "test"):
        open_split(folder, split)


@FUZZ
@given(data=st.data())
def test_manifests(prepared, tmp_path_factory, data):
    import shutil

    folder = tmp_path_factory.mktemp("manifest") / "data"
    shutil.copytree(prepared, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    for _ in range(data.draw(st.integers(1, 2))):
        where = data.draw(st.sampled_from(list(_paths(manifest))))
        if not where:
            manifest = data.draw(JSON_VALUES)
            break
        parent = manifest
        for key in where[:-1]:
            parent = parent[key]
        value = data.draw(JSON_VALUES | st.sampled_from(["<u4", "|O", "../tokenizer.json", "/etc/passwd", "12"]))
        if data.draw(st.booleans()):
            del parent[where[-1]]
        else:
            parent[where[-1]] = value
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with bounded("hypothesis manifest"):
        outcome(use_prepared, folder)


def test_checkpoint_files_mutated(tmp_path):
    """Damaged checkpoint pointers, state and safetensors files: refused by name, never half-loaded."""
    from lmlab.runs import checkpoint
    from tests.fakes import Holder

    checkpoint.save_checkpoint(tmp_path, 5, Holder(1, "model"), Holder(2, "adamw"), {"val_loss": 1.0}, best=True)
    folder = tmp_path / "checkpoints"
    originals = {name: (folder / name).read_bytes() for name in ("last.json", "best.json")}
    originals |= {f"step-000005/{f}": (folder / "step-000005" / f).read_bytes()
                  for f in ("model.safetensors", "optimizer.safetensors", "state.json")}
    rng = random.Random(f"{SEED}-checkpoint")

    def load():
        found = checkpoint.find_checkpoint(tmp_path, rng.choice(["last", "best"]))
        if found is not None:
            checkpoint.load_checkpoint(found, Holder(3, "model"), Holder(4, "adamw"))

    outcomes = {"parsed": 0, "refused": 0}
    for _ in range(cases(300)):
        name = rng.choice(sorted(originals))
        (folder / name).write_bytes(mutate(originals[name], rng))
        with bounded("checkpoint"):
            outcomes[outcome(load)] += 1
        (folder / name).write_bytes(originals[name])
    report("checkpoint files, mutated", cases=cases(300), outcomes=outcomes)


def test_zz_report_cases_tried():
    """Prints how many cases each target got (run last in this module)."""
    assert TRIED
    report("fuzz cases by target", total=sum(TRIED.values()), by_target=dict(sorted(TRIED.items())))
