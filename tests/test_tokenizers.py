"""Tokenizers: one interface, exact round trips, JSON save/load, clear errors."""

from __future__ import annotations

import json

import pytest

from lmlab.core.errors import ConfigError, DataError, LmlabError
from lmlab.tokenizers import CharTokenizer, HFTokenizer, WordTokenizer, load_tokenizer, train_tokenizer
from tests.conftest import data_path

MIXED = "The quick brown fox — 敏捷的棕色狐狸跳過了懶狗。  Tabs\tand\nnewlines, emoji 🦊, café."


def sample_text(limit=200_000) -> list[str]:
    english = data_path("tinyshakespeare", "input.txt").read_text(encoding="utf-8")[:limit]
    chinese = data_path("chinese-poetry", "tangshi_300.json").read_text(encoding="utf-8")[:limit]
    return english.split("\n\n") + chinese.split("\n")


def test_char_tokenizer_round_trip_and_unknowns(tmp_path):
    tok = train_tokenizer("char", ["abca", "床前"], min_freq=1)
    assert tok.vocab[:2] == ["<eos>", "<unk>"]
    assert tok.vocab[2] == "a"  # most frequent first
    assert tok.decode(tok.encode("abc床")) == "abc床"
    assert tok.encode("az") == [tok.index["a"], tok.unk_id]
    tok.save(tmp_path / "t.json")
    again = load_tokenizer(tmp_path / "t.json")
    assert isinstance(again, CharTokenizer) and again.vocab == tok.vocab and again.fingerprint() == tok.fingerprint()
    assert train_tokenizer("char", ["aaab"], vocab_size=3).vocab == ["<eos>", "<unk>", "a"]


def test_word_tokenizer_whitespace_and_jieba():
    tok = train_tokenizer("word", ["the cat sat on the mat", "the end"], min_freq=2)
    assert tok.vocab == ["<eos>", "<unk>", "the"]
    assert tok.encode("the dog") == [2, 1]
    assert tok.decode(tok.encode("the the"), skip_special=True) == "the the"
    chinese = train_tokenizer("word", ["我们在北京大学学习中文", "北京大学"], segmenter="jieba")
    assert "北京大学" in chinese.index
    assert chinese.decode(chinese.encode("我们在北京大学学习中文")) == "我们在北京大学学习中文"
    with pytest.raises(ConfigError, match="unknown segmenter 'spacy'"):
        train_tokenizer("word", ["x"], segmenter="spacy")


def test_byte_bpe_is_lossless_on_english_and_chinese(tmp_path):
    texts = sample_text()
    tok = train_tokenizer("bpe", texts, vocab_size=1000)
    assert tok.vocab_size == 1000 and tok.eos_token == "<|endoftext|>"
    for text in texts[:300] + [MIXED, "", "   leading spaces", "\x00\x01 control", "\U0010ffff"]:
        assert tok.decode(tok.encode(text)) == text
    # A merged vocabulary actually compresses: fewer tokens than bytes.
    sample = "".join(texts[:200])
    assert len(tok.encode(sample)) < 0.6 * len(sample.encode("utf-8"))
    tok.save(tmp_path / "bpe.json")
    again = load_tokenizer(tmp_path / "bpe.json")
    assert again.encode(MIXED) == tok.encode(MIXED) and again.kind == "bpe"
    assert tok.encode_batch(["ab", "床前"]) == [tok.encode("ab"), tok.encode("床前")]


def test_loads_a_hugging_face_tokenizer_json(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    backend = Tokenizer(models.WordLevel({"hello": 0, "world": 1, "[UNK]": 2, "</s>": 3}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.add_special_tokens(["</s>"])
    backend.save(str(tmp_path / "tokenizer.json"))
    tok = load_tokenizer(tmp_path)  # a folder means its tokenizer.json
    assert isinstance(tok, HFTokenizer) and tok.kind == "hf"
    assert tok.eos_token == "</s>" and tok.eos_id == 3 and tok.unk_id == 2
    assert tok.encode("hello there world") == [0, 2, 1]
    backend = Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]"))
    backend.save(str(tmp_path / "plain.json"))
    with pytest.raises(ConfigError, match="no known end token; name one with --eos-token"):
        load_tokenizer(tmp_path / "plain.json")
    assert load_tokenizer(tmp_path / "plain.json", eos_token="a").eos_id == 0


def test_vocabulary_too_small_for_special_tokens():
    with pytest.raises(ConfigError, match="--vocab-size 2 is too small: the special tokens <eos>, <unk> alone take 2"):
        train_tokenizer("word", ["a b c"], vocab_size=2)
    with pytest.raises(ConfigError, match="--vocab-size 100 is too small for byte-level BPE"):
        train_tokenizer("bpe", ["a b c"], vocab_size=100)
    with pytest.raises(ConfigError, match="unknown tokenizer 'sentencepiece'"):
        train_tokenizer("sentencepiece", ["x"])


@pytest.mark.parametrize("content, message", [
    (b"{not json", "is not valid JSON"),
    (b"\xff\xfe", "is not valid UTF-8"),
    (b"[1, 2]", "tokenizer JSON must be an object"),
    (b'{"lmlab_tokenizer": 1, "kind": "char"}', "lacks the field 'vocab'"),
    (b'{"lmlab_tokenizer": 1, "kind": "char", "vocab": ["a", "a"], "eos_token": "a", "unk_token": "a"}', "duplicate"),
    (b'{"lmlab_tokenizer": 1, "kind": "char", "vocab": ["<eos>", "ab"], "eos_token": "<eos>", "unk_token": "<eos>"}',
     "longer than one character"),
    (b'{"lmlab_tokenizer": 1, "kind": "magic"}', "unknown tokenizer kind 'magic'"),
    (b'{"model": {"type": "Nope"}}', "not a valid tokenizer.json"),
])
def test_malformed_tokenizer_files_are_clean_errors(tmp_path, content, message):
    path = tmp_path / "tok.json"
    path.write_bytes(content)
    with pytest.raises(LmlabError, match=message) as error:
        load_tokenizer(path)
    assert str(path) in str(error.value)
    assert isinstance(error.value, (DataError, ConfigError, LmlabError))


def test_every_tokenizer_shares_the_interface():
    tokenizers = [train_tokenizer("char", ["ab"]), train_tokenizer("word", ["a b"]),
                  train_tokenizer("bpe", ["a b"], vocab_size=300)]
    for tok in tokenizers:
        assert tok.eos_token in tok.special_tokens
        assert tok.id_to_token(tok.eos_id) == tok.eos_token
        assert json.loads(json.dumps(tok.to_dict()))["kind"] == tok.kind
        assert tok.decode(tok.encode("a") + [tok.eos_id], skip_special=True).strip() == "a"
        assert 0 < tok.vocab_size == len({tok.id_to_token(i) for i in range(tok.vocab_size)})
    assert isinstance(tokenizers[1], WordTokenizer)
