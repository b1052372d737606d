"""``lmlab.load``: one front door for runs, fine-tuned folders, Hugging Face folders, SavedModels and ARPA files.

Each kind must answer as the module it wraps answers on its own: a run's ``score`` equals
:func:`~lmlab.evaluation.score.score_texts`, its ``perplexity`` equals ``lmlab eval --text``, greedy
``generate`` equals :func:`~lmlab.generate.decoder.generate_text`; an ARPA file scores WikiText-2 test
lines as KenLM's ``query`` did (shared/data/kenlm-reference); every ``save`` format loads back through
``lmlab.load`` with the same scores (tests/test_interop.py checks the Hugging Face folder against ``transformers``).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import lmlab
from lmlab.core.errors import ConfigError, DataError, LmlabError
from lmlab.tokenizers import train_tokenizer
from tests.conftest import data_path
from tests.test_scoring import DECODERS, TEXTS, kenlm_run_folder, random_run

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning", "ignore::FutureWarning")

PROSE = "the cat sat on the mat\na dog ran in the park\nthe cat ran in the park while a dog sat on the mat\n"


@pytest.fixture(scope="module")
def bpe_run(tmp_path_factory):
    """A random Transformer run with a byte-BPE tokenizer (one that every export format can carry)."""
    tokenizer = train_tokenizer("bpe", TEXTS * 4, vocab_size=300)
    return random_run(tmp_path_factory.mktemp("load") / "run", "transformer", tokenizer, block=16,
                      **DECODERS["transformer"])


def test_import_lmlab_stays_light_and_load_is_its_front_door():
    assert callable(lmlab.load) and lmlab.LanguageModel.__name__ == "LanguageModel"
    with pytest.raises(AttributeError):
        lmlab.no_such_thing  # noqa: B018


def test_a_run_answers_as_the_modules_it_wraps(bpe_run, tmp_path):
    from lmlab.evaluation.perplexity import evaluate_run
    from lmlab.evaluation.score import score_texts
    from lmlab.generate.decoder import generate_text
    from lmlab.generate.samplers import SamplerConfig
    from lmlab.runs.load import load_run

    lm = lmlab.load(bpe_run)
    assert (lm.kind, lm.family, lm.step) == ("run", "transformer", 0)
    records = lm.score(TEXTS, tokens=True)
    expected = list(score_texts(bpe_run, TEXTS, tokens=True))
    assert [r["logprob"] for r in records] == pytest.approx([r["logprob"] for r in expected], rel=1e-6)
    assert [r["token_strings"] for r in records] == [r["token_strings"] for r in expected]
    assert lm.score(TEXTS[0])["logprob"] == pytest.approx(records[0]["logprob"], rel=1e-6)  # one text, one record
    assert lm.score(["", TEXTS[1]])[0]["error"] == "empty line"

    (tmp_path / "prose.txt").write_text(PROSE, encoding="utf-8")
    result = lm.perplexity(PROSE)
    reference = evaluate_run(bpe_run, text_file=tmp_path / "prose.txt")
    for key in ("perplexity", "bits_per_byte", "tokens", "utf8_bytes"):
        assert result[key] == pytest.approx(reference[key], rel=1e-6), key

    run = load_run(bpe_run)
    greedy = generate_text(run.model, run.tokenizer, ["the cat", "a dog ran"], 12, SamplerConfig(temperature=0))
    assert lm.generate(["the cat", "a dog ran"], max_new_tokens=12, temperature=0) == greedy
    assert lm.generate("the cat", max_new_tokens=12, temperature=0) == greedy[0]
    sampled = lm.generate(["the cat"] * 2, max_new_tokens=8, temperature=1.0, seed=3)
    assert sampled == lm.generate(["the cat"] * 2, max_new_tokens=8, temperature=1.0, seed=3)  # seeded


def test_every_save_format_loads_back_with_the_same_scores(bpe_run, tmp_path):
    lm = lmlab.load(bpe_run)
    expected = [r["logprob"] for r in lm.score(TEXTS)]

    lm.save(tmp_path / "hf", format="hf")
    hf = lmlab.load(tmp_path / "hf")
    assert hf.kind == "huggingface" and hf.family == "transformer"
    assert [r["logprob"] for r in hf.score(TEXTS)] == pytest.approx(expected, rel=1e-5)
    assert hf.generate("the cat", max_new_tokens=10, temperature=0) == lm.generate("the cat", 10, temperature=0)

    hf.save(tmp_path / "from-hf", format="lmlab")  # an imported checkpoint saved as a run folder
    again = lmlab.load(tmp_path / "from-hf")
    assert again.kind == "run" and [r["logprob"] for r in again.score(TEXTS)] == pytest.approx(expected, rel=1e-5)

    lm.save(tmp_path / "int8", format="lmlab", dtype="int8")
    int8 = lmlab.load(tmp_path / "int8")
    assert int8.run.config["inference"]["dtype"] == "int8"
    assert [r["logprob"] for r in int8.score(TEXTS)] == pytest.approx(expected, rel=0.05)

    lm.save(tmp_path / "savedmodel", format="savedmodel")
    graph = lmlab.load(tmp_path / "savedmodel")
    assert graph.kind == "savedmodel"
    # Lines within the context score exactly as the run does (longer ones: windows overlapping by one token).
    assert [r["logprob"] for r in graph.score(TEXTS[:3])] == pytest.approx(expected[:3], rel=1e-5)
    assert graph.score(TEXTS[3])["tokens"] == lm.score(TEXTS[3])["tokens"]
    assert graph.perplexity(TEXTS[0])["perplexity"] == pytest.approx(lm.perplexity(TEXTS[0])["perplexity"], rel=1e-5)
    assert graph.generate("the cat", max_new_tokens=10, temperature=0) == lm.generate("the cat", 10, temperature=0)

    with pytest.raises(ConfigError, match="cannot be saved as 'arpa'"):
        lm.save(tmp_path / "x.arpa", format="arpa")
    with pytest.raises(ConfigError, match="format must be one of"):
        lm.save(tmp_path / "x", format="onnx")
    with pytest.raises(ConfigError, match="not empty"):
        lm.save(tmp_path / "hf", format="hf")


def test_an_arpa_file_scores_as_kenlm_and_saves_both_ways(tmp_path):
    path = data_path("kenlm-reference", "valid.o3.arpa.gz")
    lm = lmlab.load(path)
    assert (lm.kind, lm.family) == ("arpa", "ngram")
    expected = np.loadtxt(data_path("kenlm-reference", "test.valid-o3.sentence-log10.txt"))
    # KenLM reserves <unk>: the reference renamed WikiText's literal <unk> to <oov> (kenlm-reference/README.md).
    test = data_path("wikitext-2", "test.txt").read_text(encoding="utf-8").replace("<unk>", "<oov>")
    lines = test.split("\n")[:len(expected)]
    chosen = [i for i, line in enumerate(lines) if line.strip()][:300]
    records = lm.score([lines[i] for i in chosen], tokens=True)
    for i, record in zip(chosen, records):
        assert record["tokens"] == len(lines[i].split()) + 1
        assert record["logprob"] == pytest.approx(expected[i] * math.log(10), rel=1e-6, abs=3e-4)
        assert record["token_strings"][-1] == "</s>"
    result = lm.perplexity(test)  # the whole test file, as `query -v summary` read it
    assert (result["tokens"], result["oov"]) == (245_569, 11_896)
    assert result["perplexity"] == pytest.approx(370.20527239198344, rel=1e-6)
    assert result["perplexity_excluding_oov"] == pytest.approx(266.26890824766497, rel=1e-6)
    assert result["bits_per_byte"] == pytest.approx(-result["log10_total"] * math.log2(10) / len(test.encode()))

    lm.save(tmp_path / "again.arpa", format="arpa")
    lm.save(tmp_path / "folder", format="lmlab")
    for copy, kind in ((tmp_path / "again.arpa", "arpa"), (tmp_path / "folder", "ngram")):
        reloaded = lmlab.load(copy)
        assert reloaded.kind == kind
        assert [r.get("logprob") for r in reloaded.score(lines[:40])] == [r.get("logprob") for r in lm.score(lines[:40])]
    words = lm.generate("the history of", max_new_tokens=12, seed=5).split()
    assert 0 < len(words) <= 12 and words == lm.generate("the history of", max_new_tokens=12, seed=5).split()
    with pytest.raises(ConfigError, match="temperature"):
        lm.generate("the", temperature=0.5)
    with pytest.raises(ConfigError, match="cannot be saved as 'hf'"):
        lm.save(tmp_path / "hf", format="hf")


def test_an_ngram_run_scores_and_writes_its_arpa(tmp_path):
    run = kenlm_run_folder(tmp_path / "run")
    lm = lmlab.load(run)
    assert (lm.kind, lm.family) == ("run", "ngram")
    line = "the first of the two games"
    arpa = lmlab.load(data_path("kenlm-reference", "valid.o3.arpa.gz"))
    assert lm.score(line)["logprob"] == pytest.approx(arpa.score(line)["logprob"], rel=1e-6)
    lm.save(tmp_path / "run.arpa", format="arpa")
    assert lmlab.load(tmp_path / "run.arpa").score(line)["logprob"] == pytest.approx(lm.score(line)["logprob"])
    with pytest.raises(ConfigError, match="counts, not weights"):
        lmlab.load(run, dtype="int8")


def test_a_finetuned_folder_predicts_and_its_lm_scores(tmp_path):
    from lmlab.tasks.config import FinetuneConfig
    from lmlab.tasks.finetune import finetune
    from tests.test_tasks_finetune import make_base_run, sentiment_file

    base = make_base_run(tmp_path / "base", family="transformer")
    train, valid = sentiment_file(tmp_path / "train.tsv", 32, 0), sentiment_file(tmp_path / "valid.tsv", 8, 1)
    config = FinetuneConfig(task="classify", max_steps=2, batch_size=8, eval_interval=2, lora_rank=2,
                            pooling="last")
    finetune(base, tmp_path / "tuned", train, valid, config, log=lambda *_: None)
    lm = lmlab.load(tmp_path / "tuned")
    assert lm.kind == "finetuned"
    answers = lm.predict(["a fine film", "a dull film"])
    assert len(answers) == 2 and all(set(a["probabilities"]) == set(lm.finetuned.labels) for a in answers)
    assert lm.score("a fine film")["tokens"] > 1
    lm.save(tmp_path / "merged-hf", format="hf")  # LoRA adapters merged on the way out
    assert lmlab.load(tmp_path / "merged-hf").score("a fine film")["logprob"] == pytest.approx(
        lm.score("a fine film")["logprob"], rel=1e-5)
    with pytest.raises(ConfigError, match="merge them first"):
        lmlab.load(tmp_path / "tuned", dtype="int8")
    with pytest.raises(ConfigError, match="not a fine-tuned folder"):
        lmlab.load(base).predict(["x"])


def test_what_is_not_a_model_gets_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        lmlab.load(tmp_path / "missing")
    with pytest.raises(ConfigError, match="not a model folder"):
        lmlab.load(tmp_path)
    (tmp_path / "config.json").write_text('{"hello": 1}')
    with pytest.raises(ConfigError, match="neither an lmlab run"):
        lmlab.load(tmp_path)
    (tmp_path / "config.json").write_text('{"hello": ')
    with pytest.raises(LmlabError, match="not valid JSON"):
        lmlab.load(tmp_path)
    (tmp_path / "notes.txt").write_text("not an arpa file\n")
    with pytest.raises(DataError):
        lmlab.load(tmp_path / "notes.txt")


def test_the_readme_python_example_runs_as_written(tmp_path, monkeypatch, capsys):
    """The README's block, verbatim, on a tiny random run where `lmlab demo` puts its run."""
    readme = (__import__("pathlib").Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    block = readme.split("## From Python", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    assert 'lmlab.load("runs/demo/run")' in block
    text = data_path("tinyshakespeare", "input.txt").read_text(encoding="utf-8")[:20_000]
    random_run(tmp_path / "runs" / "demo" / "run", "transformer", train_tokenizer("char", [text]), block=32,
               **DECODERS["transformer"])
    monkeypatch.chdir(tmp_path)
    exec(compile(block, "README.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) >= 3 and float(printed[-1]) > 0  # bits per byte
    assert (tmp_path / "runs" / "demo" / "hf" / "config.json").exists()
