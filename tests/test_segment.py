"""Tests for lmlab.tokenizers.segment: sentence splitting (English, Chinese, mixed,
WikiText-2 style), its round-trip and speed, and jieba word segmentation."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmlab.tokenizers.segment import detect_lang, segment_words, split_sentences
from lmlab.core.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("LMLAB_DATA", REPO / ".." / "shared" / "data"))


def no_space(text: str) -> str:
    return "".join(text.split())


# --- language detection ------------------------------------------------------


def test_detect_lang():
    assert detect_lang("床前明月光，疑是地上霜。") == "zh"
    assert detect_lang("The quick brown fox.") == "en"
    assert detect_lang("我用Python写代码") == "zh"  # 5 of 11 letters are ideographs
    assert detect_lang("A long English sentence mentions 北京 once.") == "en"
    assert detect_lang("") == "en"
    assert detect_lang("123 !!") == "en"


def test_unknown_lang_is_a_config_error():
    with pytest.raises(ConfigError):
        split_sentences("x", lang="fr")


# --- English -------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "Mr. Smith went to Washington. He met Dr. Jones and Prof. Lee at St. Paul's.",
            ["Mr. Smith went to Washington.", "He met Dr. Jones and Prof. Lee at St. Paul's."],
        ),
        (
            "J. R. R. Tolkien wrote books. They sold well.",
            ["J. R. R. Tolkien wrote books.", "They sold well."],
        ),
        (
            "The U.S. Army grew, e.g. in 1942. It cost $3.5 billion i.e. a lot. Pi is 3.14159 exactly.",
            ["The U.S. Army grew, e.g. in 1942.", "It cost $3.5 billion i.e. a lot.", "Pi is 3.14159 exactly."],
        ),
        (
            "Acme Inc. Sells things. See Fig. 3 and No. 5. Born Jan. 2001 in Mt. Hood vs. Co. Cork.",
            ["Acme Inc. Sells things.", "See Fig. 3 and No. 5.", "Born Jan. 2001 in Mt. Hood vs. Co. Cork."],
        ),
        (
            'He said "Stop." Then he left! (It was late.) Why? "Because." The end...',
            ['He said "Stop."', "Then he left!", "(It was late.)", "Why?", '"Because."', "The end..."],
        ),
        ("Really?! Yes. 1999 was good. ok.", ["Really?!", "Yes.", "1999 was good. ok."]),
        ("It ended (finally.) Next one.", ["It ended (finally.)", "Next one."]),
        ("no capital. after this", ["no capital. after this"]),
    ],
)
def test_english(text, expected):
    assert split_sentences(text, "en") == expected
    assert split_sentences(text) == expected  # auto picks English


def test_wikitext2_tokenized_style():
    assert split_sentences("It was released in 2011 . The game was popular .") == [
        "It was released in 2011 .",
        "The game was popular .",
    ]
    text = 'Sales reached 1 @.@ 5 million copies . " It sold well , " he said . Gen. Lee agreed .'
    assert split_sentences(text) == [
        "Sales reached 1 @.@ 5 million copies .",
        '" It sold well , " he said .',
        "Gen. Lee agreed .",
    ]


def test_blank_line_ends_a_sentence():
    text = " = Valkyria Chronicles III = \n \n Senjō no Valkyria 3 is a game . It sold ."
    assert split_sentences(text) == [
        "= Valkyria Chronicles III =",
        "Senjō no Valkyria 3 is a game .",
        "It sold .",
    ]


def test_wikitext2_file_round_trips():
    path = DATA / "wikitext-2" / "valid.txt"
    if not path.exists():
        pytest.skip(f"WikiText-2 not found under {DATA}")
    text = path.read_text(encoding="utf-8")
    sentences = split_sentences(text, "en")
    assert no_space(" ".join(sentences)) == no_space(text)
    lengths = sorted(len(s) for s in sentences)
    assert len(sentences) > 5000 and lengths[len(lengths) // 2] < 200  # split, not lumped


# --- Chinese and mixed -----------------------------------------------------------


def test_chinese_poem():
    assert split_sentences("床前明月光，疑是地上霜。举头望明月，低头思故乡。") == [
        "床前明月光，疑是地上霜。",
        "举头望明月，低头思故乡。",
    ]


def test_chinese_closing_quote_stays_with_its_sentence():
    assert split_sentences("他说：“你好！”然后走了。") == ["他说：“你好！”", "然后走了。"]
    assert split_sentences("『好嗎？』（真的！）他笑了……她哭了。") == ["『好嗎？』", "（真的！）", "他笑了……", "她哭了。"]


def test_chinese_ascii_quotes_open_or_close_by_count():
    assert split_sentences('他说:"你好!"然后走了。"再见。"她说。', "zh") == [
        '他说:"你好!"',
        "然后走了。",
        '"再见。"',
        "她说。",
    ]


def test_chinese_semicolon_and_comma_do_not_split():
    assert split_sentences("天很冷；风很大，我们回家了。", "zh") == ["天很冷；风很大，我们回家了。"]


def test_mixed_text_splits_at_both_kinds():
    text = "Hello world. 你好。我很好！Thanks! Bye. 再见？"
    expected = ["Hello world.", "你好。", "我很好！", "Thanks!", "Bye.", "再见？"]
    assert split_sentences(text, "en") == expected
    assert split_sentences(text, "zh") == expected
    assert split_sentences("我爱Python. 它很好。Mr. 王 来了。") == ["我爱Python.", "它很好。", "Mr. 王 来了。"]
    assert split_sentences("ÖST. Next one. Straße Nr. 5 ist hier.") == ["ÖST.", "Next one.", "Straße Nr.", "5 ist hier."]


# --- properties and speed -----------------------------------------------------------

WORDS = [
    "Hello", "world", "Mr.", "Dr", "J.", "U.S.", "e.g.", "3.14", "2011", "the", "It", "a", "x",
    ".", "!", "?", "...", "…", "。", "！", "？", "，", "；", '"', "'", "“", "”", "」", "(", ")",
    "你好", "世界", "北京", "\n", "\n\n", " ", "  ", "\t",
]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(WORDS), max_size=80), st.sampled_from(["auto", "en", "zh"]), st.booleans())
def test_sentences_round_trip(words, lang, spaced):
    text = (" " if spaced else "").join(words)
    sentences = split_sentences(text, lang)
    assert no_space(" ".join(sentences)) == no_space(text)
    assert all(s and s == s.strip() for s in sentences)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_sentences_round_trip_any_text(text):
    assert no_space(" ".join(split_sentences(text))) == no_space(text)


def test_one_megabyte_is_fast():
    english = "Mr. Smith paid $3.50 for it. Was it worth it? \"Yes!\" he said. J. Doe agreed . "
    chinese = "他说：“你好！”然后走了。床前明月光，疑是地上霜。"
    for text, lang in ((english * 13_000, "en"), (chinese * 40_000, "zh"), (". " * 500_000, "en")):
        assert len(text) >= 1_000_000
        start = time.perf_counter()
        sentences = split_sentences(text, lang)
        assert time.perf_counter() - start < 1.5, lang  # ~0.2–0.7 s here; linear, not quadratic
        assert sentences


# --- word segmentation ---------------------------------------------------------------


def collapse(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def test_segment_words_chinese_and_english():
    text = "我爱北京天安门 and  Python 3.11 写代码\n\n很开心！"
    words = segment_words(text)
    assert "".join(words) == collapse(text)
    assert words[:4] == ["我", "爱", "北京", "天安门"]
    assert "Python" in words and "3.11" in words
    assert " " in words and "  " not in words and "\n" not in words
    assert all(w == " " or not w.isspace() for w in words)
    assert segment_words(text) == words  # deterministic
    assert segment_words("") == []


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(["我们", "北京", "大学", "生活", "hello", "3.5", "，", "。", " ", "\n", "\t ", "é"]), max_size=30))
def test_segment_words_round_trip(parts):
    text = "".join(parts)
    words = segment_words(text)
    assert "".join(words) == collapse(text)
    assert all(words)


def test_jieba_initialises_silently_and_deterministically():
    code = "from lmlab.tokenizers.segment import segment_words; print(segment_words('今天天气很好'))"
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.strip() == str(segment_words("今天天气很好"))
