"""Task metrics against known values: sacrebleu itself, hand-computed ROUGE, SQuAD F1 and classification
cases, and the official SQuAD normalisation (tests/test_metrics_official.py compares them with the
official implementations on thousands of cases)."""

from __future__ import annotations

import pytest
import sacrebleu

from lmlab.core.errors import ConfigError
from lmlab.tasks.metrics import generation_metrics
from lmlab.tasks.metrics.bleu import corpus_bleu
from lmlab.tasks.metrics.classification import classification_metrics
from lmlab.tasks.metrics.rouge import corpus_rouge, lcs_length, rouge_scores, rouge_tokens
from lmlab.tasks.metrics.squad import exact_match, f1_score, normalize_answer, squad_scores

# sacrebleu's README example: BLEU = 48.53 82.4/50.0/45.5/37.5 (BP = 0.943 ratio = 0.944 hyp_len = 17 ref_len = 18)
SYSTEM = ["The dog bit the man.", "It wasn't surprising.", "The man had just bitten him."]
REFS_A = ["The dog bit the man.", "It was not unexpected.", "The man bit him first."]
REFS_B = ["The dog had bit the man.", "No one was surprised.", "The man had bitten the dog."]


def test_bleu_is_sacrebleus_own_score():
    ours = corpus_bleu(SYSTEM, list(zip(REFS_A, REFS_B)), "en")
    assert ours["bleu"] == pytest.approx(48.530827, abs=1e-4)
    assert ours["bleu"] == sacrebleu.corpus_bleu(SYSTEM, [REFS_A, REFS_B]).score
    assert ours["bleu_brevity_penalty"] == pytest.approx(0.943, abs=1e-3)
    assert ours["bleu_signature"].startswith("nrefs:2|tok:13a")


def test_chinese_bleu_uses_the_zh_tokenizer_and_uneven_references():
    predictions = ["猫坐在垫子上。", "今天天气很好"]
    references = [["猫坐在垫子上。", "一只猫在垫子上。"], ["今天天气不错"]]
    ours = corpus_bleu(predictions, references, "zh")
    expected = sacrebleu.corpus_bleu(predictions, [["猫坐在垫子上。", "今天天气不错"], ["一只猫在垫子上。", None]],
                                     tokenize="zh")
    assert ours["bleu"] == expected.score and "tok:zh" in ours["bleu_signature"]
    # Unsegmented Chinese under the English tokenizer is one "word" per sentence: a different, wrong score.
    assert corpus_bleu(predictions, references, "en")["bleu"] != ours["bleu"]


def test_rouge_by_hand():
    # the cat on the mat / the cat sat on the mat: 5 of 5 unigrams match (recall 5/6), 3 bigrams of 4 and 5.
    scores = rouge_scores("The cat on the mat.", ["the cat sat on the mat"])
    assert scores["rouge1"] == pytest.approx(2 * 1 * (5 / 6) / (1 + 5 / 6))
    assert scores["rouge2"] == pytest.approx(2 * (3 / 4) * (3 / 5) / (3 / 4 + 3 / 5))
    assert scores["rougeL"] == pytest.approx(scores["rouge1"])  # the LCS is the 5 shared words in order
    assert rouge_tokens("The cat's HAT!", "en") == ["the", "cat", "s", "hat"]
    assert lcs_length(list("abcd"), list("acbd")) == 3
    assert rouge_scores("", ["a b"]) == {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0, "rougeLsum": 0.0}


def test_rouge_chinese_is_character_level_and_takes_the_best_reference():
    # 我爱北京 / 我爱上海: characters 我 爱 shared (2 of 4 each side), bigram 我爱 (1 of 3).
    scores = rouge_scores("我爱北京", ["我爱上海", "完全不同"], "zh")
    assert scores == pytest.approx({"rouge1": 0.5, "rouge2": 1 / 3, "rougeL": 0.5, "rougeLsum": 0.5})
    assert rouge_tokens("我 爱 NLP", "zh") == ["我", "爱", "N", "L", "P"]
    corpus = corpus_rouge(["我爱北京", "你好"], [["我爱上海"], ["你好"]], "zh")
    assert corpus == pytest.approx({"rouge1": 75.0, "rouge2": (100 / 3 + 100) / 2, "rougeL": 75.0, "rougeLsum": 75.0})


def test_official_squad_normalisation():
    assert normalize_answer("The Denver Broncos!") == "denver broncos"
    assert normalize_answer("  A  cat's   toy. ") == "cats toy"
    assert normalize_answer("an apple, the pear and a plum") == "apple pear and plum"
    assert normalize_answer("Theatre") == "theatre"  # articles only as whole words


def test_squad_exact_match_and_f1_by_hand():
    assert exact_match("the Denver Broncos", "Denver Broncos") == 1.0
    assert f1_score("Broncos", "Denver Broncos") == pytest.approx(2 * 1 * 0.5 / 1.5)
    # "cat sat on mat" against "cat on mat": 3 shared tokens, precision 3/4, recall 1.
    assert f1_score("the cat sat on the mat", "a cat on a mat") == pytest.approx(6 / 7)
    # v1.1 (the default): no shared token is F1 0, even for two empty answers; v2.0: no answer matches no answer.
    assert f1_score("", "") == 0.0 and f1_score("", "the") == 0.0 and exact_match("", "the") == 1.0
    assert f1_score("", "", version="2.0") == 1.0 and f1_score("cat", "", version="2.0") == 0.0
    assert f1_score("", "cat", version="2.0") == 0.0
    scores = squad_scores(["Denver Broncos", "Panthers", "1990"],
                          [["Denver Broncos", "Broncos"], ["Carolina Panthers"], ["1991"]])
    assert scores["exact_match"] == pytest.approx(100 / 3)
    assert scores["f1"] == pytest.approx(100 * (1 + 2 * 1 * 0.5 / 1.5 + 0) / 3)


def test_chinese_squad_follows_cmrc2018():
    assert exact_match("北京。", "北京", "zh") == 1.0  # the CMRC punctuation list is removed
    # mixed segmentation: 北 京 大 学 / 北 京; longest common substring 2: precision 2/4, recall 1.
    assert f1_score("北京大学", "北京", "zh") == pytest.approx(2 * 0.5 * 1 / 1.5)
    assert f1_score("1990年", "1990", "zh") == pytest.approx(2 * 0.5 * 1 / 1.5)  # tokens 1990, 年
    # Runs are split by NLTK's word tokenizer, as the script does: 3.5 is one token (3.5 亿 / 3.5: F1 2/3).
    assert f1_score("3.5亿", "3.5", "zh") == pytest.approx(2 * 0.5 * 1 / 1.5)


def test_classification_metrics_by_hand():
    result = classification_metrics([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], ["a", "b", "c"])
    assert result["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert result["accuracy"] == pytest.approx(60.0)
    assert result["per_class"]["b"] == pytest.approx({"precision": 200 / 3, "recall": 100.0, "f1": 80.0, "support": 2})
    assert result["macro_f1"] == pytest.approx(100 * (0.5 + 0.8 + 0.0) / 3)
    # A label neither present nor predicted does not count towards macro-F1 (scikit-learn's rule).
    assert classification_metrics([0, 1], [0, 1], ["a", "b", "c"])["macro_f1"] == pytest.approx(100.0)


def test_generation_metrics_by_name():
    result = generation_metrics(("rouge", "squad"), ["Denver Broncos"], [["Denver Broncos"]], "en")
    assert result["rouge1"] == result["exact_match"] == result["f1"] == 100.0
    with pytest.raises(ConfigError, match="unknown metric"):
        generation_metrics(("meteor",), ["a"], [["a"]], "en")
