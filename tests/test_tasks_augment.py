"""Augmentation (lmlab.tasks.augment): each operation on fixed seeds, labels untouched, Chinese segmented
with jieba, empty and one-word inputs, stop words protected; WordNet, Cilin and embedding-neighbour synonyms;
the augment command."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from lmlab.core.errors import ConfigError
from lmlab.tasks.augment import (Augmenter, Cilin, EmbeddingNeighbours, WordNet, augment_examples, corpus_vocabulary,
                                 parse_operations)
from lmlab.tasks.augment.words import split_words
from lmlab.tasks.readers.examples import LabelledText
from lmlab.tasks.readers.labelled import read_labelled
from tests.conftest import data_path

SENTENCE = "the acting is terrible and the story is not funny ."


@pytest.fixture(scope="module")
def wordnet():
    return WordNet()  # found as $LMLAB_DATA/wordnet: WordNet 3.0's database in the shared data


@pytest.fixture(scope="module")
def cilin():
    return Cilin(data_path("cilin", "cilin_ex.utf8.txt"))


def words(text):
    return text.split()


def one(operation, rate, text, wordnet, seed=0, **kwargs):
    augmenter = Augmenter([(operation, rate)], copies=1, seed=seed, synonyms={"en": wordnet}, **kwargs)
    result = augmenter.augment(text)
    return result[0].text if result else None


# ---------------------------------------------------------------- synonym sources


def test_wordnet_synonyms_with_morphy_and_case(wordnet):
    assert wordnet.synonyms("movie")[:3] == ["film", "picture", "moving picture"]
    assert "film" in wordnet.synonyms("movies")  # plural reduced by morphy's noun rules
    assert "tale" in wordnet.synonyms("stories")  # -ies -> -y
    assert "awful" in wordnet.synonyms("terrible")
    assert wordnet.base_forms("geese", "n") == ["goose"]  # from noun.exc
    assert wordnet.synonyms("xyzzy") == []
    assert all(not s[0].isupper() for s in wordnet.synonyms("bush"))  # no proper names for a lower-case word
    assert any(s[0].isupper() for s in wordnet.synonyms("Bush"))


def test_wordnet_missing_folder_says_how_to_install(tmp_path):
    with pytest.raises(ConfigError, match="wordnet-base.*--wordnet DIR"):
        WordNet(tmp_path)


def test_wordnet_is_found_in_nltk_data_or_said_where_it_was_looked_for(tmp_path, monkeypatch):
    import shutil

    from lmlab.tasks.augment.wordnet import default_wordnet_dir

    for name in ("LMLAB_WORDNET", "LMLAB_DATA", "NLTK_DATA"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("lmlab.tasks.augment.wordnet.DEFAULT_DIR", str(tmp_path / "no-debian"))
    monkeypatch.setattr("lmlab.tasks.augment.wordnet.NLTK_DIRS", ("~/nltk_data",))
    with pytest.raises(ConfigError, match=r"WordNet not found \(looked in .*nltk_data/corpora/wordnet.*wordnet-base"):
        default_wordnet_dir()
    nltk = tmp_path / "nltk_data" / "corpora" / "wordnet"
    shutil.copytree(data_path("wordnet"), nltk)
    assert default_wordnet_dir() == nltk
    assert "film" in WordNet().synonyms("movie")


def test_cilin_synonym_groups_only_and_both_encodings(cilin):
    assert cilin.synonyms("漂亮")[:2] == ["美丽", "好看"]
    assert "顺民" not in cilin.synonyms("良民")  # '#' lines group related words, not synonyms
    assert cilin.synonyms("角色") == []  # '@': a word alone
    original = Cilin(data_path("cilin", "cilin_ex.txt"))  # GB18030 with CRLF
    assert original.synonyms("漂亮") == cilin.synonyms("漂亮")


def make_run(folder, vocab, table):
    """A run folder holding only what EmbeddingNeighbours reads: config, tokenizer, embedding checkpoint."""
    from safetensors.numpy import save_file

    from lmlab.core.io import write_json
    from lmlab.tokenizers import WordTokenizer

    step = folder / "checkpoints" / "step-000001"
    step.mkdir(parents=True)
    save_file({"token_embedding/embeddings": np.asarray(table, np.float32)}, str(step / "model.safetensors"))
    write_json(step / "state.json", {"step": 1})
    write_json(folder / "checkpoints" / "best.json", {"checkpoint": "step-000001", "step": 1})
    write_json(folder / "config.json", {"model": {"family": "transformer"}})
    WordTokenizer(vocab).save(folder / "tokenizer.json")
    return folder


def test_embedding_neighbours_by_cosine(tmp_path):
    vocab = ["<eos>", "<unk>", "good", "great", "bad", "awful", ","]
    table = [[0, 0, 1], [0, 0, -1], [1, 0.1, 0], [0.9, 0.2, 0], [-1, 0, 0.1], [-0.9, -0.1, 0], [0, 1, 0]]
    neighbours = EmbeddingNeighbours(make_run(tmp_path / "run", vocab, table), k=2)
    # cosines from good: great 0.98, bad -0.99, awful -0.999; "," and the specials are not words.
    assert neighbours.synonyms("good") == ["great", "bad"]
    assert neighbours.synonyms("awful")[0] == "bad"
    assert neighbours.synonyms("unseen") == []


# ---------------------------------------------------------------- the operations


def test_synonym_replacement(wordnet):
    out = words(one("sr", 0.25, SENTENCE, wordnet))
    original = words(SENTENCE)
    changed = [i for i, (a, b) in enumerate(zip(original, out)) if a != b]
    assert len(out) == len(original) and len(changed) == 2  # int(0.25 * 10 words) = 2
    for i in changed:
        assert out[i] in wordnet.synonyms(original[i])


def test_random_insertion(wordnet):
    for seed in range(3):
        out = words(one("ri", 0.1, SENTENCE, wordnet, seed=seed))
        original = words(SENTENCE)
        extra = len(out) - len(original)  # a synonym may be several words ("news report")
        synonyms = {s for w in original for s in wordnet.synonyms(w)}
        assert extra >= 1 and any(out[:i] + out[i + extra:] == original and " ".join(out[i:i + extra]) in synonyms
                                  for i in range(len(out)))


def test_random_swap_keeps_the_words_and_their_punctuation():
    out = one("rs", 0.1, "a sad, slow story .", None)
    assert Counter(words(out.replace(",", ""))) == Counter(words("a sad slow story ."))
    assert out.split()[1].endswith(",")  # the comma stays in its place, the words move
    assert one("rs", 0.5, "film", None) is None  # one word: nothing to swap


def test_random_deletion_never_empties_a_text():
    out = words(one("rd", 0.5, SENTENCE, None, seed=3))
    original = words(SENTENCE)
    assert len(out) < len(original)
    assert [w for w in original if w in out] == out  # a subsequence, in order
    assert one("rd", 1.0, "wonderful", None) is None  # the only word is never deleted: unchanged, so no copy
    only = one("rd", 1.0, "wonderful and moving", None)
    assert only in ("wonderful and", "and moving")  # one word stays; the stop word is protected


def test_random_vocabulary_replacement():
    vocabulary = ["alpha", "beta", "gamma"]
    out = words(one("rv", 0.2, SENTENCE, None, vocabulary=vocabulary))
    changed = [(a, b) for a, b in zip(words(SENTENCE), out) if a != b]
    assert len(changed) == 2 and all(b in vocabulary for _, b in changed)
    with pytest.raises(ConfigError, match="needs a vocabulary"):
        Augmenter([("rv", 0.1)])
    assert corpus_vocabulary(["the film is good", "a film"]) == ["film", "good"]


def test_stop_words_and_negations_are_protected(wordnet):
    augmenter = Augmenter(parse_operations("sr=0.5,ri=0.5,rs=0.5,rd=0.5"), copies=8, seed=0, synonyms={"en": wordnet})
    for index in range(10):
        for new in augmenter.augment("this is not a good film", index):
            assert "not" in new.text.split()
            assert new.text.split().index("not") < len(new.text.split())
            if new.operation == "rd":
                assert {"this", "is", "not", "a"} <= set(new.text.split())


def test_seeded_per_text_and_copies_differ(wordnet):
    operations = parse_operations("sr=0.2,ri=0.2,rs=0.2,rd=0.2")
    a = Augmenter(operations, copies=4, seed=1, synonyms={"en": wordnet})
    b = Augmenter(operations, copies=4, seed=1, synonyms={"en": wordnet})
    assert a.augment(SENTENCE, 7) == b.augment(SENTENCE, 7)  # the same whatever came before
    assert a.augment(SENTENCE, 7) != a.augment(SENTENCE, 8)
    texts = [x.text for x in a.augment(SENTENCE, 7)]
    assert len(set(texts)) == len(texts) and SENTENCE not in texts
    assert [x.operation for x in a.augment(SENTENCE, 7)] == ["sr", "ri", "rs", "rd"]


def test_empty_and_one_word_inputs(wordnet):
    augmenter = Augmenter(parse_operations("sr,ri,rs,rd"), copies=4, synonyms={"en": wordnet})
    assert augmenter.augment("") == [] and augmenter.augment("   ") == [] and augmenter.augment(" , . ") == []
    single = augmenter.augment("film")
    assert {x.operation for x in single} <= {"sr", "ri"}  # swap and delete cannot change one word
    assert all(x.text.split()[0] in wordnet.synonyms("film") + ["film"] for x in single)


def test_chinese_is_segmented_with_jieba(cilin):
    text = "这家酒店的服务非常好"  # jieba: 这家 酒店 的 服务 非常 好
    augmenter = Augmenter(parse_operations("rs=0.3"), copies=3, seed=0, synonyms={"zh": cilin})
    for new in augmenter.augment(text):
        assert Counter(t.core for t in split_words(new.text, "zh")) == Counter(["这家", "酒店", "的", "服务", "非常", "好"])
        assert new.text.endswith("非常好")  # 的, 非常 and 好 are stop words: they stay
    replaced = Augmenter(parse_operations("sr=0.5"), copies=1, seed=0, synonyms={"zh": cilin}).augment("房间很漂亮")
    # jieba: 房间 很 漂亮; one whole word (很 is a stop word) becomes one of its Cilin synonyms.
    expected = {s + "很漂亮" for s in cilin.synonyms("房间")} | {"房间很" + s for s in cilin.synonyms("漂亮")}
    assert len(replaced) == 1 and replaced[0].text in expected
    with pytest.raises(ConfigError, match="--cilin FILE"):
        Augmenter(parse_operations("sr"), synonyms={"en": None}).augment("房间很漂亮")


def test_labels_are_never_changed(wordnet):
    examples = [LabelledText(SENTENCE, "0", "x:1"), LabelledText("a gripping , moving film", "1", "x:2")]
    augmenter = Augmenter(parse_operations("sr,ri,rs,rd"), copies=4, seed=0, synonyms={"en": wordnet})
    out, operations, rows = augment_examples(examples, augmenter)
    assert len(out) > len(examples)
    assert all(example.label == examples[row].label for example, row in zip(out, rows))
    assert [o for o, op in zip(out, operations) if op is None] == examples


def test_bad_operation_specs():
    assert parse_operations("synonym=0.2,delete") == (("sr", 0.2), ("rd", 0.1))
    for spec, message in (("sr=2", r"in \(0, 1\]"), ("flip=0.1", "unknown augmentation"), ("", "no augmentation"),
                          ("sr,sr", "listed twice"), ("rd=x", "must be a number")):
        with pytest.raises(ConfigError, match=message):
            parse_operations(spec)


def test_augment_command_writes_a_readable_file(cli, tmp_path):
    source = tmp_path / "in.tsv"
    source.write_text("sentence\tlabel\nthe acting is terrible\t0\na gripping , moving film\t1\n", encoding="utf-8")
    code, out, err = cli("augment", source, tmp_path / "out.tsv", "--copies", "2", "--seed", "3")
    assert code == 0, err
    rows = read_labelled(tmp_path / "out.tsv")
    assert rows[0].text == "the acting is terrible" and len(rows) == 6
    assert [r.label for r in rows] == ["0", "0", "0", "1", "1", "1"]
    code, out, err = cli("augment", source, tmp_path / "out.jsonl", "--ops", "rs", "--no-original")
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    assert code == 0 and records and all(r["operation"] == "rs" for r in records)
    assert all(r["label"] == ["0", "1"][r["source_row"]] for r in records)
    code, out, err = cli("augment", source, tmp_path / "x.tsv", "--ops", "sr=7")
    assert code == 1 and "rate for sr must be in (0, 1]" in err


def test_augment_reads_plain_text_one_sentence_a_line(cli, tmp_path):
    source = tmp_path / "sentences.txt"
    source.write_text("the acting is terrible\n\na gripping, moving film\twith a tab\n", encoding="utf-8")
    code, out, err = cli("augment", source, tmp_path / "out.jsonl", "--copies", "2", "--seed", "1")
    assert code == 0, err
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    originals = [r["text"] for r in records if r["operation"] is None]
    assert originals == ["the acting is terrible", "a gripping, moving film\twith a tab"]  # a tab is text here
    assert len(records) == 6 and all(r["label"] is None for r in records)
    other = tmp_path / "sentences.lines"
    other.write_text("one line\nanother line\n", encoding="utf-8")
    code, out, err = cli("augment", other, tmp_path / "out2.jsonl", "--format", "text", "--copies", "1")
    assert code == 0, err
    assert len((tmp_path / "out2.jsonl").read_text(encoding="utf-8").splitlines()) == 4
