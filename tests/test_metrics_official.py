"""lmlab's task metrics against their official implementations, on thousands of real cases each.

- ROUGE-1/2/L/Lsum against Google's ``rouge_score`` (``RougeScorer``, with and without
  ``use_stemmer``) on AG News (title against the description's lead; multi-sentence descriptions)
  and SQuAD paragraphs (lead-3 against the answer sentences, several references), and through a
  character tokenizer on LCSTS for Chinese.
- SQuAD v1.1 EM/F1 against the official ``evaluate-v1.1.py`` functions (tests/reference/) on every
  dev question, with varied predictions; CMRC 2018 EM/F1 against the official script's functions on
  spans cut from ChnSentiCorp reviews and Tang poems.
- Classification figures against scikit-learn on seeded random label arrays.
- BLEU against sacrebleu called directly, on the Tatoeba cmn-eng pairs with several references.

Every comparison counts the cases that differ by more than 1e-9 and asserts none do.
"""

from __future__ import annotations

import csv
import json
import random
import re
from collections import defaultdict

import numpy as np
import pytest
import sacrebleu
from nltk.tokenize import word_tokenize as nltk_word_tokenize
from rouge_score import rouge_scorer
from sklearn import metrics as sk

from lmlab.tasks.metrics import generation_metrics
from lmlab.tasks.metrics.bleu import corpus_bleu
from lmlab.tasks.metrics.classification import classification_metrics
from lmlab.tasks.metrics.rouge import ROUGE_TYPES, corpus_rouge, rouge_scores
from lmlab.tasks.metrics.squad import cmrc_segments, question_scores, squad_scores
from lmlab.tasks.metrics.treebank import word_tokenize
from tests.conftest import data_path
from tests.reference import cmrc2018_official as cmrc
from tests.reference import squad_v11_official as squad11

TOLERANCE = 1e-9
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def differences(ours: list[float], theirs: list[float]) -> int:
    assert len(ours) == len(theirs)
    return sum(abs(a - b) > TOLERANCE for a, b in zip(ours, theirs))


# ---------------------------------------------------------------- ROUGE

def ag_news() -> list[tuple[str, str]]:
    with open(data_path("news-agnews", "test.csv"), encoding="utf-8", newline="") as f:
        return [(title, description.replace("\\", " ")) for _, title, description in csv.reader(f)]


def english_rouge_pairs() -> list[tuple[str, list[str]]]:
    """(prediction, references): 7,600 AG News headlines against the description's first sentence,
    2,000 multi-sentence descriptions (one sentence a line) against the title and lead, and every
    fourth SQuAD dev paragraph's lead-3 against the sentences holding its answers and its questions
    (one sentence or question a line)."""
    news = ag_news()
    pairs = [(SENTENCE_END.split(description)[0], [title]) for title, description in news]
    for title, description in news[:2000]:
        sentences = SENTENCE_END.split(description)
        pairs.append((f"{title}\n{sentences[0]}", ["\n".join(sentences)]))
    with open(data_path("squad", "dev-v1.1.json"), encoding="utf-8") as f:
        articles = json.load(f)["data"]
    for paragraph in [p for article in articles for p in article["paragraphs"]][::4]:
        sentences = SENTENCE_END.split(paragraph["context"])
        answers = {a["text"] for qa in paragraph["qas"] for a in qa["answers"]}
        oracle = [s for s in sentences if any(a in s for a in answers)] or sentences[-1:]
        questions = "\n".join(qa["question"] for qa in paragraph["qas"])
        pairs.append(("\n".join(sentences[:3]), ["\n".join(oracle), questions]))
    return pairs


def official_rouge(scorer, pairs) -> dict[str, list[float]]:
    scores = [scorer.score_multi(references, prediction) for prediction, references in pairs]
    return {t: [s[t].fmeasure for s in scores] for t in ROUGE_TYPES}


def assert_rouge_agrees(pairs, lang: str, stem: bool, scorer) -> None:
    theirs = official_rouge(scorer, pairs)
    ours = [rouge_scores(prediction, references, lang, stem) for prediction, references in pairs]
    for t in ROUGE_TYPES:
        assert differences([s[t] for s in ours], theirs[t]) == 0, t
    corpus = corpus_rouge([p for p, _ in pairs], [r for _, r in pairs], lang, stem)
    for t in ROUGE_TYPES:
        assert corpus[t] == pytest.approx(100 * float(np.mean(theirs[t])), abs=TOLERANCE)
    assert 0 < corpus["rougeLsum"] < 100 and corpus["rouge2"] < corpus["rouge1"]  # the data exercises the scores


@pytest.mark.slow
@pytest.mark.parametrize("stem", [False, True], ids=["plain", "stemmed"])
def test_english_rouge_is_rouge_scores(stem):
    pairs = english_rouge_pairs()
    assert len(pairs) > 10_000
    pairs = pairs[::2] if stem else pairs  # rouge_score's stemming is slow: every second pair (5,000)
    assert_rouge_agrees(pairs, "en", stem, rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=stem))


class Characters:
    """lmlab's Chinese tokens (every non-space character) as a rouge_score tokenizer."""

    def tokenize(self, text):
        return [ch for ch in text if not ch.isspace()]


def test_chinese_rouge_is_rouge_scores_over_characters():
    """rouge_score's own tokenizer drops Chinese, so it gets lmlab's character tokens: the n-gram,
    LCS and summary-level counting are then compared on 2,000 LCSTS pairs (lead 18 characters and
    the first two sentences of the text, a line each)."""
    with open(data_path("summarization", "lcsts", "test.src.txt"), encoding="utf-8") as f:
        sources = f.read().splitlines()[:2000]
    with open(data_path("summarization", "lcsts", "test.tgt.txt"), encoding="utf-8") as f:
        targets = f.read().splitlines()[:2000]
    pairs = [(source[:18], [target]) for source, target in zip(sources, targets)]
    pairs += [("\n".join(re.split(r"(?<=[。！？])", source)[:2]), [target])
              for source, target in zip(sources, targets)]
    assert_rouge_agrees(pairs, "zh", False, rouge_scorer.RougeScorer(list(ROUGE_TYPES), tokenizer=Characters()))


def test_rouge_lsum_takes_the_union_lcs_and_counts_each_token_once():
    # rouge_score's own test case (rouge_scorer_test.testRougeLsum...) style: union LCS over sentences.
    reference = "w1 w2 w3 w4 w5\nw6 w7 w8 w9 w10"
    prediction = "w1 w2 w6 w7 w8\nw1 w3 w8 w9 w5"
    ours = rouge_scores(prediction, [reference])
    theirs = rouge_scorer.RougeScorer(["rougeLsum"]).score(reference, prediction)["rougeLsum"].fmeasure
    assert ours["rougeLsum"] == pytest.approx(theirs, abs=TOLERANCE) and ours["rougeLsum"] != ours["rougeL"]
    # Stemming: cats -> cat, running -> run; "ran" (3 characters) is left alone, as rouge_score leaves it.
    both = generation_metrics(("rouge", "rouge-stemmed"), ["The cats ran running"], [["the cat runs run"]], "en")
    assert both == pytest.approx({"rouge1": 25.0, "rouge2": 0.0, "rougeL": 25.0, "rougeLsum": 25.0,
                                  "rouge1_stemmed": 75.0, "rouge2_stemmed": 100 / 3, "rougeL_stemmed": 75.0,
                                  "rougeLsum_stemmed": 75.0})


# ---------------------------------------------------------------- SQuAD v1.1

def squad_predictions(articles) -> list[tuple[str, str, list[str]]]:
    """(id, prediction, answers) for every question: cycling through the first answer, its first half,
    the span shifted one word right, the empty string, an article only, the answer upper-cased with
    "!", the last answer, the answer and one more word, the paragraph's first words, and the answer's
    words reversed after "a"."""
    rows = []
    for article in articles:
        for paragraph in article["paragraphs"]:
            context = paragraph["context"]
            for qa in paragraph["qas"]:
                answers = [a["text"] for a in qa["answers"]]
                first = qa["answers"][0]
                words, after = first["text"].split(), context[first["answer_start"]:].split()
                choice = len(rows) % 10
                prediction = [
                    first["text"], " ".join(words[:max(1, len(words) // 2)]), " ".join(after[1:len(words) + 1]), "",
                    "The", first["text"].upper() + "!", answers[-1], " ".join(after[:len(words) + 1]),
                    " ".join(context.split()[:len(words)]), "a " + " ".join(reversed(words)),
                ][choice]
                rows.append((qa["id"], prediction, answers))
    return rows


@pytest.mark.slow
def test_squad_v11_dev_is_the_official_script():
    with open(data_path("squad", "dev-v1.1.json"), encoding="utf-8") as f:
        articles = json.load(f)["data"]
    rows = squad_predictions(articles)
    assert len(rows) == 10_570
    ours = [question_scores(prediction, answers) for _, prediction, answers in rows]
    theirs_em = [float(squad11.metric_max_over_ground_truths(squad11.exact_match_score, p, a)) for _, p, a in rows]
    theirs_f1 = [float(squad11.metric_max_over_ground_truths(squad11.f1_score, p, a)) for _, p, a in rows]
    assert differences([em for em, _ in ours], theirs_em) == 0
    assert differences([f1 for _, f1 in ours], theirs_f1) == 0
    official = squad11.evaluate(articles, {qid: p for qid, p, _ in rows})
    scores = squad_scores([p for _, p, _ in rows], [a for *_, a in rows])
    assert scores["squad_rules"] == "squad-v1.1"
    assert scores["exact_match"] == pytest.approx(official["exact_match"], abs=TOLERANCE)
    assert scores["f1"] == pytest.approx(official["f1"], abs=TOLERANCE)
    assert 20 < official["exact_match"] < official["f1"] < 90  # the predictions vary


def test_squad_v11_empty_answers_score_as_the_official_script():
    # No token in common gives F1 0 in v1.1 even when both sides normalise to nothing; exact match is 1.
    for prediction, answer in [("", ""), ("", "the"), ("a", "."), ("The!", "an")]:
        assert question_scores(prediction, [answer]) == (1.0, 0.0) == \
            (float(squad11.exact_match_score(prediction, answer)), float(squad11.f1_score(prediction, answer)))
    # A SQuAD v2.0 set (a question with no answer) is scored with v2.0's rules: no answer matches only no answer.
    scores = squad_scores(["", "", "Denver"], [[""], ["Denver Broncos"], ["Denver", "."]])
    assert scores == pytest.approx({"exact_match": 200 / 3, "f1": 100 * (1 + 0 + 1) / 3, "squad_rules": "squad-v2.0"})
    assert squad_scores([""], [["."]], version="2.0")["f1"] == 100.0  # v2.0 drops answers that normalise to nothing
    assert squad_scores([""], [["."]])["f1"] == 0.0


# ---------------------------------------------------------------- CMRC 2018

TRICKY_RUNS = ["3.5", "1,000", "15.4", "50%", "iPhone 6s", "don't", "\"OK\"", "U.S.", "Wi-Fi", "x. y", "(NBA)",
               "$20", "A&B", "can't", "2008年", "……", "…", "C++", "e-mail", "'quoted'", "No.1", "1.", "gonna"]


def cmrc_cases() -> list[tuple[str, list[str]]]:
    """(prediction, answers): spans of 4,200 ChnSentiCorp reviews and the 300 Tang poems (1 to 3 overlapping
    answers) against the same span, shifted, cut, extended, with punctuation or spaces added,
    upper-cased, empty, or with an English or number run put in."""
    texts = []
    with open(data_path("chnsenticorp", "dev.tsv"), encoding="utf-8") as f:
        texts += [line.split("\t")[2].strip() for line in f.read().splitlines()[1:]]
    with open(data_path("chnsenticorp", "train.tsv"), encoding="utf-8") as f:
        texts += [line.split("\t")[1].strip() for line in f.read().splitlines()[1:3001]]
    with open(data_path("chinese-poetry", "tangshi_300.json"), encoding="utf-8") as f:
        texts += ["".join(poem["paragraphs"]) for poem in json.load(f)]
    rng = random.Random(2018)
    cases = []
    for text in texts:
        if len(text) < 8:
            continue
        start = rng.randrange(len(text) - 4)
        end = min(len(text), start + rng.randint(2, 15))
        answers = [text[start:end]] + [text[max(0, start - rng.randint(0, 3)):end + rng.randint(0, 3)]
                                       for _ in range(rng.randint(0, 2))]
        shift = rng.randint(1, 3)
        prediction = rng.choice([
            text[start:end], text[start + shift:end + shift], text[start:max(start + 1, end - shift)],
            text[max(0, start - shift):end], text[start:end] + "。", " " + text[start:end] + " ", "",
            text[start:end].upper(), text[start:end] + rng.choice(TRICKY_RUNS),
            rng.choice(TRICKY_RUNS) + text[start:end],
            text[start:(start + end) // 2] + rng.choice(TRICKY_RUNS) + text[(start + end) // 2:end],
        ])
        if rng.random() < 0.2:
            answers[0] = answers[0] + rng.choice(TRICKY_RUNS)
        cases.append((prediction, answers))
    return cases


def test_cmrc2018_is_the_official_script():
    cases = cmrc_cases()
    assert len(cases) > 4_000
    ours = [question_scores(prediction, answers, "zh") for prediction, answers in cases]
    assert differences([em for em, _ in ours], [float(cmrc.calc_em_score(a, p)) for p, a in cases]) == 0
    assert differences([f1 for _, f1 in ours], [float(cmrc.calc_f1_score(a, p)) for p, a in cases]) == 0
    for prediction, answers in cases:
        assert cmrc_segments(prediction) == cmrc.mixed_segmentation(prediction, rm_punc=True)
    em = np.mean([cmrc.calc_em_score(a, p) for p, a in cases])
    f1 = np.mean([cmrc.calc_f1_score(a, p) for p, a in cases])
    scores = squad_scores([p for p, _ in cases], [a for _, a in cases], "zh")
    assert scores["exact_match"] == pytest.approx(100 * em) and scores["f1"] == pytest.approx(100 * f1)
    assert 10 < scores["exact_match"] < scores["f1"] < 95 and scores["squad_rules"] == "cmrc2018"


def test_cmrc_tokenizer_is_nltks_word_tokenize():
    """lmlab's port of NLTK's word tokenizer against NLTK on 20,000 random strings of its special cases."""
    rng = random.Random(3)
    pieces = list("abNT sy'\"`.,:;!?()[]{}<>-–—$%&@#*09 \t«»“”‘’„")
    pieces += ["n't", "can", "not", "gonna", "'re", "'s", "'t", "is", "...", "--", "3.5", "1,000"]
    for _ in range(20_000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 16)))
        assert word_tokenize(text) == nltk_word_tokenize(text, preserve_line=True), text


# ---------------------------------------------------------------- classification

def test_classification_is_scikit_learn():
    rng = np.random.default_rng(0)
    cases = 0
    for _ in range(1000):
        k = int(rng.integers(2, 8))
        n = int(rng.integers(1, 120))
        weights = rng.dirichlet(np.full(k, 0.5))  # uneven classes: some never present or never predicted
        true = rng.choice(k, n, p=weights)
        predicted = np.where(rng.random(n) < rng.random(), true, rng.choice(k, n, p=rng.dirichlet(np.ones(k))))
        labels = [f"c{i}" for i in range(k)]
        ours = classification_metrics(true.tolist(), predicted.tolist(), labels)
        precision, recall, f1, support = sk.precision_recall_fscore_support(true, predicted, labels=range(k),
                                                                            zero_division=0)
        assert ours["accuracy"] == pytest.approx(100 * sk.accuracy_score(true, predicted), abs=TOLERANCE)
        assert ours["macro_f1"] == pytest.approx(100 * sk.f1_score(true, predicted, average="macro", zero_division=0),
                                                 abs=TOLERANCE)
        assert ours["confusion_matrix"] == sk.confusion_matrix(true, predicted, labels=range(k)).tolist()
        for i, label in enumerate(labels):
            row = ours["per_class"][label]
            assert [row["precision"], row["recall"], row["f1"]] == \
                pytest.approx([100 * precision[i], 100 * recall[i], 100 * f1[i]], abs=TOLERANCE)
            assert row["support"] == support[i]
        cases += 1
    assert cases == 1000


# ---------------------------------------------------------------- BLEU

def tatoeba() -> list[tuple[str, str]]:
    with open(data_path("translation-cmn-eng", "cmn.txt"), encoding="utf-8") as f:
        return [tuple(line.split("\t")[:2]) for line in f.read().splitlines() if line]


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_bleu_is_sacrebleu_on_tatoeba(lang):
    """Every Tatoeba source once, its translations as references (up to 10), the prediction the first
    reference with its second word (English) or its last two characters (Chinese) dropped."""
    grouped = defaultdict(list)
    for english, chinese in tatoeba():
        source, target = (chinese, english) if lang == "en" else (english, chinese)
        grouped[source].append(target)
    references = list(grouped.values())
    assert len(references) > 20_000 and max(map(len, references)) > 3
    if lang == "en":
        predictions = [" ".join(w for i, w in enumerate(r[0].split()) if i != 1) for r in references]
    else:
        predictions = [r[0][:-2] if len(r[0]) > 3 else r[0] for r in references]
    ours = corpus_bleu(predictions, references, lang)
    depth = max(map(len, references))
    streams = [[r[i] if i < len(r) else None for r in references] for i in range(depth)]
    theirs = sacrebleu.corpus_bleu(predictions, streams, tokenize="zh" if lang == "zh" else "13a")
    assert ours["bleu"] == theirs.score and ours["bleu_precisions"] == theirs.precisions
    assert ours["bleu_brevity_penalty"] == theirs.bp and 10 < ours["bleu"] < 90
    assert ours["bleu_signature"].startswith(f"nrefs:{depth}|tok:{'zh' if lang == 'zh' else '13a'}")
