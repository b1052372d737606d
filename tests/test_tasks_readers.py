"""Task readers (lmlab.tasks.readers.labelled, pairs, squad), templates and prompt fitting, on the shared data and on
small hand-made files: formats, column choice, and the errors for bad input."""

from __future__ import annotations

import json

import pytest

from lmlab.core.errors import ConfigError, DataError, LmlabError
from lmlab.tasks.batching import CompletionData, encode_texts, padded_length
from lmlab.tasks.readers.examples import TaskExample
from lmlab.tasks.readers.labelled import label_ids, label_set, read_labelled
from lmlab.tasks.readers.pairs import group_references, read_task_examples
from lmlab.tasks.prompts import fit_prompt, training_sequence
from lmlab.tasks.readers.squad import read_squad
from lmlab.tasks.readers.templates import BUILTIN, load_template
from lmlab.tokenizers import CharTokenizer, WordTokenizer
from tests.conftest import data_path


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------- labelled text


def test_sst2_train_and_dev_as_glue_writes_them():
    train = read_labelled(data_path("sst2", "train.tsv"))
    dev = read_labelled(data_path("sst2", "dev.tsv"))
    assert (len(train), len(dev)) == (67_349, 872)
    assert dev[0].text == "it 's a charming and often affecting journey ." and dev[0].label == "1"
    assert dev[0].where.endswith("dev.tsv:2")
    assert label_set(train) == ["0", "1"]
    assert sum(label_ids(dev, ["0", "1"])) == 444  # 444 positive, 428 negative (GLUE's dev)


def test_sst2_test_file_has_no_labels_and_is_read_for_prediction_only():
    path = data_path("sst2", "test.tsv")
    with pytest.raises(DataError, match="no label column"):
        read_labelled(path)
    rows = read_labelled(path, require_labels=False)
    assert len(rows) == 1821 and rows[0].label is None


def test_chnsenticorp_train_dev_and_the_hotel_csv():
    train = read_labelled(data_path("chnsenticorp", "train.tsv"))
    dev = read_labelled(data_path("chnsenticorp", "dev.tsv"))  # qid, label, text_a
    assert (len(train), len(dev)) == (9600, 1200)
    assert train[0].text.startswith("选择珠江花园的原因就是方便") and train[0].label == "1"
    assert dev[0].text.startswith("這間酒店環境")
    hotels = read_labelled(data_path("chnsenticorp", "ChnSentiCorp_htl_all.csv"))
    assert len(hotels) == 7765 and set(label_set(hotels)) == {"0", "1"}
    assert [w.rsplit(":", 1)[1] for w in hotels.skipped] == ["6376"]  # its one row without a review
    assert hotels[0].text.startswith('距离川沙公路较近,但是公交指示不对,如果是"蔡陆线"的话')  # CSV quotes undone


def test_agnews_without_header_by_column_indices():
    rows = read_labelled(data_path("news-agnews", "test.csv"), text_column="1,2", label_column="0")
    assert len(rows) == 7600 and label_set(rows) == ["1", "2", "3", "4"]
    assert rows[0].text.startswith("Fears for T N pension after talks Unions representing")


def test_generic_jsonl_and_named_columns(tmp_path):
    path = write(tmp_path / "d.jsonl", '{"review": "great", "stars": 5}\n\n{"review": "bad", "stars": 1}\n')
    rows = read_labelled(path, text_column="review", label_column="stars")
    assert [(r.text, r.label) for r in rows] == [("great", "5"), ("bad", "1")]
    assert rows[1].where.endswith("d.jsonl:3")
    assert label_set(rows) == ["1", "5"]


def test_labelled_bad_input_errors_name_the_problem(tmp_path):
    with pytest.raises(DataError, match="no text column 'body'; the columns are sentence, label"):
        read_labelled(write(tmp_path / "a.tsv", "sentence\tlabel\nhi\t1\n"), text_column="body")
    with pytest.raises(DataError, match="no text column among id, stars"):
        read_labelled(write(tmp_path / "b.tsv", "id\tstars\n1\t2\n"))
    with pytest.raises(DataError, match="the file is empty"):
        read_labelled(write(tmp_path / "c.tsv", "\n  \n"))
    with pytest.raises(DataError, match="no data rows after the header"):
        read_labelled(write(tmp_path / "d.tsv", "sentence\tlabel\n"))
    with pytest.raises(DataError, match=r"e.tsv:3: empty label"):
        read_labelled(write(tmp_path / "e.tsv", "sentence\tlabel\nok\t1\nfine\t\n"))
    with pytest.raises(DataError, match=r"f.tsv:2: the row has no column"):
        read_labelled(write(tmp_path / "f.tsv", "sentence\tlabel\nonly text\n"))
    with pytest.raises(DataError, match=r"g.jsonl:1: not valid JSON"):
        read_labelled(write(tmp_path / "g.jsonl", "{oops\n"))
    with pytest.raises(DataError, match="all columns as names or all as 0-based indices"):
        read_labelled(write(tmp_path / "h.tsv", "sentence\tlabel\nx\t1\n"), text_column="0", label_column="label")
    with pytest.raises(DataError, match="every row's text is empty"):
        read_labelled(write(tmp_path / "i.tsv", "sentence\tlabel\n\t1\n"))
    with pytest.raises(LmlabError, match="not found"):
        read_labelled(tmp_path / "missing.tsv")


def test_unknown_label_names_the_row():
    rows = read_labelled(data_path("sst2", "dev.tsv"))
    with pytest.raises(DataError, match=r"dev.tsv:2: unknown label '1'; the model knows 'neg', 'pos'"):
        label_ids(rows, ["neg", "pos"], "test data")


# ---------------------------------------------------------------- pairs, SQuAD


def test_tatoeba_pairs_and_grouped_references():
    pairs = read_task_examples(data_path("translation-cmn-eng", "cmn.txt"))
    assert len(pairs) == 29_155 and pairs[0].fields == {"source": "Hi."} and pairs[0].target == "嗨。"
    grouped = group_references(pairs[:2])
    assert len(grouped) == 1 and grouped[0].references == ("嗨。", "你好。")
    swapped = read_task_examples(data_path("translation-cmn-eng", "cmn.txt"), swap=True, limit=1)
    assert swapped[0].fields == {"source": "嗨。"} and swapped[0].target == "Hi."


def test_lcsts_source_and_target_files_by_either_name():
    src = data_path("summarization", "lcsts", "test.src.txt")
    by_src = read_task_examples(src)
    by_tgt = read_task_examples(src.with_name("test.tgt.txt"))
    by_prefix = read_task_examples(src.with_name("test"), format="lcsts")
    assert len(by_src) == len(by_tgt) == len(by_prefix) == 10_666
    assert by_src[0].target == "林志颖公司疑涉虚假营销无厂房无研发"
    assert by_src[0].fields["source"].startswith("日前，方舟子发文直指林志颖")


def test_lcsts_unequal_files_are_an_error(tmp_path):
    write(tmp_path / "x.src.txt", "a\nb\n")
    write(tmp_path / "x.tgt.txt", "a\n")
    with pytest.raises(DataError, match="has 2 lines but .* has 1"):
        read_task_examples(tmp_path / "x.src.txt")


def test_squad_v11_dev_and_a_v20_unanswerable_question(tmp_path):
    questions = read_task_examples(data_path("squad", "dev-v1.1.json"))
    assert len(questions) == 10_570
    first = questions[0]
    assert first.fields["question"] == "Which NFL team represented the AFC at Super Bowl 50?"
    assert first.target == "Denver Broncos" and first.references == ("Denver Broncos",) * 3
    assert first.starts == (177,) * 3 and first.fields["context"][177:191] == "Denver Broncos"
    assert all(e.fields["context"][e.starts[0]:].startswith(e.target) for e in questions)  # every offset checked
    v2 = {"version": "v2.0", "data": [{"title": "T", "paragraphs": [{"context": "Cats purr.", "qas": [
        {"id": "q1", "question": "Do dogs purr?", "answers": [], "is_impossible": True,
         "plausible_answers": [{"text": "purr", "answer_start": 5}]},
        {"id": "q2", "question": "Who purrs?", "answers": [{"text": "Cats", "answer_start": 0}],
         "is_impossible": False}]}]}]}
    path = write(tmp_path / "v2.json", json.dumps(v2))
    impossible, answerable = read_task_examples(path)
    assert impossible.target == "" and impossible.references == ("",)
    assert answerable.references == ("Cats",) and answerable.id == "q2"
    assert impossible.starts == () and answerable.starts == (0,)


def squad_json(context, answers):
    qas = [{"id": "q1", "question": "Who?", "answers": answers}]
    return json.dumps({"data": [{"title": "T", "paragraphs": [{"context": context, "qas": qas}]}]})


def test_squad_answer_offsets_follow_the_stripping_and_a_wrong_one_moves_to_the_nearest_occurrence(tmp_path):
    # answer_start counts in the file's context: its two leading spaces (and the answer's own) are stripped
    path = write(tmp_path / "a.json", squad_json("  Cats purr. Cats nap.", [
        {"text": "Cats", "answer_start": 13}, {"text": " Cats", "answer_start": 1}, {"text": "Cats"}]))
    lines = []
    (question,) = read_squad(path, log=lines.append)
    assert question.fields["context"] == "Cats purr. Cats nap." and question.starts == (11, 0, None)
    assert lines == []
    # Off by 3 from the second "Cats" (and a string offset, as some files write it): the nearest one, counted
    write(path, squad_json("Cats purr. Cats nap.", [{"text": "Cats", "answer_start": "9"}]))
    (question,) = read_squad(path, log=lines.append)
    assert question.starts == (11,) and len(lines) == 1 and "1 answer(s) not at their answer_start" in lines[0]
    write(path, squad_json("Cats purr.", [{"text": "Dogs", "answer_start": 0}]))
    with pytest.raises(DataError, match=r"paragraph 0: question 'q1': the answer 'Dogs' \(answer_start 0\) is "
                                        r"not in the context"):
        read_squad(path)
    write(path, squad_json("Cats purr.", [{"text": "Cats", "answer_start": [0]}]))
    with pytest.raises(DataError, match=r"question 'q1': answer_start must be a character offset \(an integer\), "
                                        r"got \[0\]"):
        read_squad(path)


def test_pair_and_squad_errors(tmp_path):
    with pytest.raises(DataError, match=r"p.txt:2: expected two tab-separated sentences"):
        read_task_examples(write(tmp_path / "p.txt", "Hi.\t你好。\njust one\n"))
    with pytest.raises(DataError, match="not a SQuAD file"):
        read_task_examples(write(tmp_path / "s.json", '{"articles": []}'))
    with pytest.raises(DataError, match="no field 'target'.*--target-field"):
        read_task_examples(write(tmp_path / "j.jsonl", '{"source": "a", "summary": "b"}\n'))
    rows = read_task_examples(write(tmp_path / "k.jsonl", '{"source": "a", "summary": ["b", "c"]}\n'),
                              target_field="summary")
    assert rows[0].references == ("b", "c") and rows[0].fields == {"source": "a"}


# ---------------------------------------------------------------- templates and prompt fitting


def test_builtin_templates_and_a_template_file(tmp_path):
    prompt, prefix = BUILTIN["qa"].render({"context": "C", "question": "Q?", "title": "t"})
    assert (prompt, prefix) == ("Context: C\nQuestion: Q?\nAnswer:", " ")
    custom = load_template(str(write(tmp_path / "t.txt", "{source}\n摘要：\n")))
    assert custom.render({"source": "正文"}) == ("正文\n摘要：", "") and custom.truncate_field == "source"
    with pytest.raises(DataError, match="needs the field.*question"):
        BUILTIN["qa"].render({"source": "x"}, "f:1")
    with pytest.raises(ConfigError, match="unknown template 'poem'"):
        load_template("poem")
    with pytest.raises(ConfigError, match="needs \\{field\\} placeholders"):
        load_template(str(write(tmp_path / "u.txt", "no fields")))


WORDS = WordTokenizer(["<eos>", "<unk>", "Text:", "Summary:", "a", "b", "c", "d", "x", "y"])


def example(source, target="x y"):
    return TaskExample({"source": source}, target, (target,), "1", "data.txt:1")


def test_training_sequence_masks_the_prompt():
    template = BUILTIN["summarize"]
    sequence, prompt_length, cut = training_sequence(WORDS, template, example("a b c"), 16, False)
    assert WORDS.decode(sequence) == "Text: a b c Summary: x y <eos>" and prompt_length == 5 and not cut
    data = CompletionData([sequence], [prompt_length], 16)
    batch = next(data.batches(2))
    x, y, mask = batch.inputs[0], batch.targets, batch.weights
    assert x.shape == (2, 8) and mask[1].sum() == 0  # the padding row
    scored = [WORDS.id_to_token(int(t)) for t, m in zip(y[0], mask[0]) if m]
    assert scored == ["x", "y", "<eos>"]  # the completion and the end token, never the prompt


def test_over_long_prompt_is_an_error_or_is_cut_to_fit():
    template = BUILTIN["summarize"]
    long = example("a b c d a b c d a b")
    with pytest.raises(DataError, match=r"data.txt:1: the prompt is 12 tokens but the model's context of 10 leaves "
                                        r"room for 8.*--truncate-source"):
        training_sequence(WORDS, template, long, 10, False)
    sequence, prompt_length, cut = training_sequence(WORDS, template, long, 10, True)
    assert cut and prompt_length == 8 and WORDS.decode(sequence) == "Text: a b c d a b Summary: x y <eos>"
    assert len(sequence) - 1 == 10  # what the model reads fills the context exactly
    ids, _, cut = fit_prompt(WORDS, template, example("a b"), 2, True, 10)
    assert cut and WORDS.decode(ids) == "Text: Summary:"
    with pytest.raises(DataError, match="even with an empty source"):
        fit_prompt(WORDS, template, example("a b"), 1, True, 10)
    with pytest.raises(DataError, match="the target alone is 3 tokens"):
        training_sequence(WORDS, template, example("a", "x y x"), 3, True)


def test_encoded_texts_end_with_the_end_token_and_long_ones_keep_their_start():
    chars = CharTokenizer(["<eos>", "<unk>", "a", "b"])
    encoded, cut = encode_texts(chars, ["ab", "abababab"], 5)
    assert encoded == [[2, 3, 0], [2, 3, 2, 3, 0]] and cut == 1
    assert [padded_length(n, 64) for n in (1, 8, 9, 33, 100)] == [8, 8, 16, 64, 64]
