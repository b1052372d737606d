"""``lmlab prepare`` end to end on the real shared sets, plus resume and bad input."""

from __future__ import annotations

import json
import re
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lmlab.data import load_manifest, open_split, prepare, verify
from lmlab.data.shards import ShardWriter
from lmlab.core.errors import DataError
from lmlab.tokenizers import load_tokenizer
from tests.conftest import REPO, data_path


def shard_tokens(folder: Path, split: str) -> np.ndarray:
    return np.concatenate([np.asarray(a) for a in open_split(folder, split).arrays])


def assert_counts_add_up(folder: Path) -> dict:
    manifest = load_manifest(folder)
    for name, split in manifest["splits"].items():
        assert sum(s["tokens"] for s in split["shards"]) == split["tokens"]
        if split["tokens"]:
            assert len(shard_tokens(folder, name)) == split["tokens"]
    assert verify(folder) == []
    return manifest


def test_wikitext2_word_level_with_its_own_splits(tmp_path, cli):
    wt2 = data_path("wikitext-2")
    code, out, err = cli("prepare", f"train={wt2 / 'train.txt'}", f"valid={wt2 / 'valid.txt'}",
                         f"test={wt2 / 'test.txt'}", "--tokenizer", "word", "--unit", "paragraph", "--no-dedup",
                         "--out", tmp_path, "--workers", "1")
    assert code == 0, err
    manifest = assert_counts_add_up(tmp_path)
    assert manifest["tokenizer"]["vocab_size"] == 33_278  # the standard WikiText-2 vocabulary
    lines = {s: [l.split() for l in open(wt2 / f"{s}.txt", encoding="utf-8") if l.strip()] for s in ("train", "valid", "test")}
    for split, split_lines in lines.items():
        # Every word plus one <eos> per non-empty line; nothing is <unk> that was not <unk> in the file.
        assert manifest["splits"][split]["tokens"] == sum(len(l) + 1 for l in split_lines)
    tokenizer = load_tokenizer(tmp_path / "tokenizer.json")
    valid = shard_tokens(tmp_path, "valid")
    assert int((valid == tokenizer.unk_id).sum()) == sum(l.count("<unk>") for l in lines["valid"])
    first = valid[: len(lines["valid"][0]) + 1].tolist()
    assert tokenizer.decode(first) == " ".join(lines["valid"][0]) + " <eos>"
    assert "train" in out and "33,278" in out


def test_tiny_shakespeare_char_level(tmp_path):
    manifest = prepare(str(data_path("tinyshakespeare", "input.txt")), tmp_path, tokenizer="char",
                       split=(0.9, 0.1, 0.0), split_order="ordered", clean={"dedup": False})
    assert_counts_add_up(tmp_path)
    tokenizer = load_tokenizer(tmp_path / "tokenizer.json")
    assert tokenizer.vocab_size == 65 + 2  # the 65 characters of the text, <eos>, <unk>
    text = data_path("tinyshakespeare", "input.txt").read_text(encoding="utf-8")
    speeches = [s for s in text.split("\n\n") if s.strip()]
    train, valid = shard_tokens(tmp_path, "train"), shard_tokens(tmp_path, "valid")
    # Ordered split: the last tenth of the speeches is the validation set, in order, losslessly.
    restored = tokenizer.decode(np.concatenate([train, valid]).tolist()).split("<eos>")[:-1]
    # Cleaning collapses runs of spaces and strips line ends (14 double spaces, 2 trailing ones in the file).
    normalised = [re.sub(r" *\n *", "\n", re.sub(r" +", " ", s)).strip() for s in speeches]
    assert restored == normalised
    assert manifest["splits"]["valid"]["documents"] == len(speeches) - round(len(speeches) * 0.9)
    assert manifest["dtype"] == "<u2"


def test_wikipedia_dump_to_byte_bpe(tmp_path):
    dump = data_path("wikipedia-xml", "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2")
    manifest = prepare(str(dump), tmp_path, tokenizer="bpe", vocab_size=8000, split=(0.9, 0.05, 0.05), workers=2,
                       tokenizer_max_chars=1_500_000)
    assert_counts_add_up(tmp_path)
    assert manifest["tokenizer"]["vocab_size"] == 8000
    assert manifest["report"]["reader_skipped"]["wiki redirect pages"] == 99
    tokenizer = load_tokenizer(tmp_path / "tokenizer.json")
    text = "".join(tokenizer.decode(shard_tokens(tmp_path, s).tolist()) for s in ("train", "valid", "test"))
    for markup in ("{{", "}}", "[[", "]]", "<ref", "{|", "|}"):
        assert markup not in text, markup
    assert text.count("<|endoftext|>") == sum(manifest["splits"][s]["documents"] for s in ("train", "valid", "test"))
    assert "Anarchism is a political philosophy" in text
    assert "#REDIRECT" not in text.upper()


def test_tang_poems_three_ways(tmp_path):
    poems = data_path("chinese-poetry", "quan_tang_shi")
    sources = [str(poems / "poet.tang.0.json"), str(poems / "poet.tang.1000.json")]
    opts = dict(read={"format": "json", "fields": ("paragraphs",)}, split=(0.9, 0.05, 0.05))
    chars = prepare(sources, tmp_path / "char", tokenizer="char", **opts)
    words = prepare(sources, tmp_path / "word", tokenizer="word", segmenter="jieba", **opts)
    bpe = prepare(sources, tmp_path / "bpe", tokenizer="bpe", vocab_size=2000, **opts)
    for folder in ("char", "word", "bpe"):
        assert_counts_add_up(tmp_path / folder)
    # Same documents and splits whatever the tokenizer; words are fewer than characters.
    assert chars["splits"]["valid"]["documents"] == words["splits"]["valid"]["documents"] == bpe["splits"]["valid"]["documents"]
    assert words["splits"]["train"]["tokens"] < chars["splits"]["train"]["tokens"]
    char_tok, bpe_tok = load_tokenizer(tmp_path / "char"), load_tokenizer(tmp_path / "bpe")
    from_chars = char_tok.decode(shard_tokens(tmp_path / "char", "valid").tolist())
    from_bpe = bpe_tok.decode(shard_tokens(tmp_path / "bpe", "valid").tolist())
    # BPE is lossless; the character vocabulary (from train) maps characters unseen there to <unk>.
    bpe_docs, char_docs = from_bpe.split("<|endoftext|>"), from_chars.split("<eos>")
    assert len(bpe_docs) == len(char_docs) > 10
    for bpe_doc, char_doc in zip(bpe_docs, char_docs):
        assert "".join(c if c in char_tok.index else "<unk>" for c in bpe_doc) == char_doc
    assert "，" in from_chars and "。" in from_chars


def test_ag_news_csv(tmp_path):
    manifest = prepare(str(data_path("news-agnews", "test.csv")), tmp_path, tokenizer="bpe", vocab_size=1000,
                       read={"fields": ("1", "2")}, unit="sentence", lang="en")
    assert_counts_add_up(tmp_path)
    assert manifest["report"]["documents_read"] == 7600
    assert manifest["splits"]["train"]["units"] > manifest["splits"]["train"]["documents"]  # sentences


def test_workers_resume_and_rerun_give_identical_output(tmp_path, monkeypatch):
    source = str(data_path("tinyshakespeare", "input.txt"))
    opts = dict(tokenizer="char", shard_tokens=50_000, split=(0.8, 0.1, 0.1))
    reference = prepare(source, tmp_path / "one", workers=1, **opts)
    assert len(reference["splits"]["train"]["shards"]) > 10
    prepare(source, tmp_path / "two", workers=2, **opts)

    # Fail part-way through (as a full disk would), then resume.
    calls = {"n": 0}
    original = ShardWriter.append

    def failing_append(self, tokens):
        calls["n"] += 1
        if calls["n"] == 3000:
            raise OSError(28, "No space left on device")
        return original(self, tokens)

    monkeypatch.setattr(ShardWriter, "append", failing_append)
    with pytest.raises(OSError):
        prepare(source, tmp_path / "three", workers=1, **opts)
    monkeypatch.setattr(ShardWriter, "append", original)
    partial = tmp_path / "three"
    assert not (partial / "manifest.json").exists()
    assert not list(partial.glob("*.tmp"))
    with pytest.raises(DataError, match="prepare did not finish here"):
        open_split(partial, "train")
    resumed = prepare(source, partial, workers=1, **opts)

    files = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in partial.iterdir())
    for name in files:
        one = (tmp_path / "one" / name).read_bytes()
        assert one == (tmp_path / "two" / name).read_bytes() == (partial / name).read_bytes(), name
    assert resumed == reference
    # Running again with the same options is a no-op; other options need --overwrite.
    assert prepare(source, partial, **opts) == reference
    with pytest.raises(Exception, match="prepared with other options"):
        prepare(source, partial, tokenizer="char", shard_tokens=40_000)


def test_killed_prepare_resumes_byte_identical(tmp_path):
    source = data_path("tinyshakespeare", "input.txt")
    args = [sys.executable, "-m", "lmlab", "prepare", str(source), "--tokenizer", "char", "--shard-tokens", "20000",
            "--workers", "1", "--quiet"]
    subprocess.run(args + ["--out", str(tmp_path / "whole")], check=True, cwd=REPO, capture_output=True)
    env = {**os.environ, "LMLAB_TEST_KILL_AFTER_DOCS": "3000"}
    killed = subprocess.run(args + ["--out", str(tmp_path / "killed")], cwd=REPO, env=env, capture_output=True)
    assert killed.returncode == -9
    assert not (tmp_path / "killed" / "manifest.json").exists()
    subprocess.run(args + ["--out", str(tmp_path / "killed")], check=True, cwd=REPO, capture_output=True)
    for path in (tmp_path / "whole").iterdir():
        assert path.read_bytes() == (tmp_path / "killed" / path.name).read_bytes(), path.name


def test_corrupted_or_truncated_shard_is_rejected(tmp_path, cli):
    prepare(str(data_path("tinyshakespeare", "input.txt")), tmp_path, tokenizer="char")
    shard = tmp_path / "train-00000.bin"
    data = bytearray(shard.read_bytes())
    data[1000] ^= 0xFF
    shard.write_bytes(bytes(data))
    code, out, err = cli("data", "verify", tmp_path)
    assert code == 1 and "train-00000.bin: shard checksum does not match the manifest (corrupted)" in err
    with pytest.raises(DataError, match="checksum does not match"):
        open_split(tmp_path, "train")
    shard.write_bytes(bytes(data[:-2]))
    with pytest.raises(DataError, match="truncated or overwritten"):
        open_split(tmp_path, "train", checksum=False)
    code, out, err = cli("data", "verify", tmp_path)
    assert code == 1 and "truncated" in err


def test_stats_command(tmp_path, cli):
    prepare(str(data_path("tinyshakespeare", "input.txt")), tmp_path, tokenizer="char")
    code, out, err = cli("data", "stats", tmp_path, "--top", "3")
    assert code == 0
    assert "most frequent 3 train tokens" in out and "' '" in out
    code, out, _ = cli("data", "stats", tmp_path, "--json")
    stats = json.loads(out)
    assert stats["splits"]["train"]["shards"] == 1 and stats["tokenizer"]["kind"] == "char"


# ---------------------------------------------------------------- bad input through the CLI


def check_failure(cli, out_dir: Path, *args, message: str):
    code, out, err = cli("prepare", *args, "--out", out_dir, "--workers", "1", "--quiet")
    assert code == 1
    assert err.startswith("lmlab: error: ") and message in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (out_dir / "manifest.json").exists()
    assert not list(out_dir.glob("*.tmp")) if out_dir.exists() else True


def test_bad_input_gives_one_line_errors(tmp_path, cli):
    out = tmp_path / "out"
    check_failure(cli, out, tmp_path / "missing.txt", message="missing.txt: no such file or folder")
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    check_failure(cli, out, empty, message="empty corpus")
    blank = tmp_path / "blank.txt"
    blank.write_text("\n\n   \n")
    check_failure(cli, out, blank, "--tokenizer", "char", message="empty corpus")
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine\n" * 10 + b"caf\xe9\n")
    check_failure(cli, out, bad, message="bad.txt:11: invalid UTF-8 at byte 53")
    check_failure(cli, out, bad, "--tokenizer", "nonsense", message="unknown tokenizer 'nonsense'")
    check_failure(cli, out, bad, "--tokenizer", "word", "--vocab-size", "2", message="--vocab-size 2 is too small")
    check_failure(cli, out, bad, "--split", "0.5,0.2", message="--split must be three fractions")
    jsonl = tmp_path / "bad.jsonl"
    jsonl.write_text('{"text": "a"}\n{"text": \n', encoding="utf-8")
    check_failure(cli, out, jsonl, message="bad.jsonl:2: malformed JSONL line")
    dump = data_path("wikipedia-xml", "enwiki-table-markup.xml.bz2")
    cut = tmp_path / "cut.xml.bz2"
    cut.write_bytes(dump.read_bytes()[:30_000])
    check_failure(cli, out, cut, message="cut.xml.bz2: truncated or corrupt compressed stream after")
    code, _, err = cli("prepare", bad, "--errors", "replace", "--tokenizer", "char", "--out", out, "--workers", "1")
    assert code == 0 and verify(out) == []


def test_debug_shows_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "lmlab", "--debug", "prepare", str(tmp_path / "nope"), "--out",
                             str(tmp_path / "o")], cwd=REPO, capture_output=True, text=True)
    assert result.returncode != 0 and "Traceback" in result.stderr and "DataError" in result.stderr


def test_every_command_has_help(cli):
    for args in (["--help"], ["prepare", "--help"], ["data", "stats", "--help"], ["data", "verify", "--help"]):
        with pytest.raises(SystemExit) as exit_:
            cli(*args)
        assert exit_.value.code == 0
    code, out, _ = cli()
    assert code == 2 and "prepare" in out
    result = subprocess.run([sys.executable, "-m", "lmlab", "--version"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("lmlab ")
