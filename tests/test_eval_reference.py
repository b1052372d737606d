"""lmlab's evaluation numbers against computations written here, independently of it.

* Masked LM (:mod:`lmlab.evaluation.masked`): a fake encoder whose logits at each position
  are a fixed table's row for that position's input id. Pseudo-perplexity is then known by
  hand (``2 ** (7 / 4)``); masked loss and accuracy are recomputed with NumPy from the very
  masks the scorer draws (its documented seed ``(seed, first row)`` per batch).
* Causal LM (:mod:`lmlab.evaluation.perplexity`, ``lmlab eval``): a slow reference loop
  (Hugging Face's sliding-window perplexity: windows of the context length every ``stride``
  tokens, each scoring the targets no earlier window scored) over a tiny trained Transformer's
  logits, one eager call a window, log-softmax in float64; then perplexity and bits per byte
  of the UTF-8 text. And for an imported Hugging Face checkpoint, the same loop run by
  ``transformers`` itself (PyTorch forward, ``log_softmax``, ``gather``).
"""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch  # the [test] extra installs transformers and torch: these tests run, never skipped
import transformers
from keras import ops

from lmlab.data import prepare
from lmlab.data.masking import mask_tokens
from lmlab.data.shards import TokenSplit
from lmlab.evaluation.masked import evaluate_mlm, masked_scores, pseudo_perplexity
from lmlab.evaluation.perplexity import evaluate_run
from lmlab.interop import import_hf
from lmlab.runs.load import load_run
from lmlab.tokenizers.specials import SpecialIds
from lmlab.training.config import TrainConfig
from lmlab.training.trainer import train
from tests.baselines import split_tokens
from tests.conftest import data_path
from tests.test_interop import CORPUS, MIXED, VOCAB, hf_model

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")


def log_softmax(logits: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits, np.float64)
    shifted = logits - logits.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


# ---------------------------------------------------------------------------
# Masked LM: a fake encoder with known logits
# ---------------------------------------------------------------------------

PAD, CLS, SEP, MASK = 0, 1, 2, 3  # ids 4-7 are words
SPECIAL = SpecialIds(mask=MASK, cls=CLS, sep=SEP, pad=PAD, all=(PAD, CLS, SEP, MASK), mask_token="[MASK]")
V = 8
# TABLE[i]: the logits at a position whose input is id i. At a masked position (input MASK) the
# model believes 4, 5, 6, 7 with probabilities 1/2, 1/4, 1/8, 1/8; a visible word mostly itself.
TABLE = np.full((V, V), -30.0)
TABLE[MASK, 4:] = np.log([1 / 2, 1 / 4, 1 / 8, 1 / 8])
for word in range(4, V):
    TABLE[word, 4:] = np.log(np.where(np.arange(4, V) == word, 0.7, 0.1))
for special in (PAD, CLS, SEP):
    TABLE[special, special] = 0.0


class TableEncoder:
    """Logits ``TABLE[x]``: each position sees only its own input id. Records every input it is given."""

    def __init__(self, mask_prob=0.15, block_size=6):
        self.config = SimpleNamespace(whole_word=False, mask_prob=mask_prob, block_size=block_size, packing="full")
        self.inputs = []

    def __call__(self, x, types=None, training=None):
        assert types is None and training is False
        self.inputs.append(np.array(x))
        return TABLE[np.asarray(x)].astype(np.float32)  # (B, T, V)

    # The same model through the model contract's two halves (a scorer may call these instead).
    def hidden_states(self, x, training=None, lengths=None):
        return ops.one_hot(ops.cast(x, "int32"), V)  # (B, T, V): the input id, nothing else

    def logits(self, hidden):
        return ops.matmul(ops.cast(hidden, "float32"), ops.convert_to_tensor(TABLE, "float32"))  # (B, T, V)


TOKENIZER = SimpleNamespace(vocab_size=V)


def test_pseudo_perplexity_by_hand():
    rows = np.array([[CLS, 4, 5, 4, SEP],
                     [CLS, 6, PAD, PAD, SEP]])
    model = TableEncoder()
    np.testing.assert_allclose(ops.convert_to_numpy(model.logits(model.hidden_states(rows))), TABLE[rows], atol=1e-6)
    # Scored: 4, 5, 4, 6, each masked alone, so each sees TABLE[MASK]: -ln(1/2), -ln(1/4), -ln(1/2), -ln(1/8).
    result = pseudo_perplexity(model, rows, SPECIAL, batch_size=3)
    assert result["pseudo_tokens"] == 4
    assert result["pseudo_loss"] == pytest.approx(7 / 4 * math.log(2), abs=1e-6)
    assert result["pseudo_perplexity"] == pytest.approx(2 ** (7 / 4), abs=1e-6)
    # One token masked at a time, the rest of the row as it was.
    seen = np.concatenate(model.inputs)
    assert ((seen == MASK).sum(axis=1) == 1).all() and len(seen) == 4
    np.testing.assert_array_equal(np.where(seen == MASK, rows[[0, 0, 0, 1]], seen), rows[[0, 0, 0, 1]])
    truncated = pseudo_perplexity(TableEncoder(), rows, SPECIAL, max_tokens=3)
    assert truncated["pseudo_tokens"] == 3
    assert truncated["pseudo_perplexity"] == pytest.approx(2 ** (4 / 3), abs=1e-6)


def test_masked_loss_and_accuracy_by_hand():
    rows = np.random.default_rng(5).integers(4, V, (7, 6)).astype(np.int32)
    rows[:, 0], rows[:, -1] = CLS, SEP
    rows[6, 3:5] = PAD
    model = TableEncoder(mask_prob=0.5)
    result = masked_scores(model, rows, TOKENIZER, SPECIAL, batch_size=3, seed=11)

    total = hits = count = 0.0
    for start, seen in zip(range(0, len(rows), 3), model.inputs):
        x, y, w = mask_tokens(rows[start:start + 3], np.random.default_rng((11, start)), SPECIAL, V, 0.5)
        np.testing.assert_array_equal(seen, x)  # the scorer fed the masks it documents
        assert not w[np.isin(y, SPECIAL.all)].any()
        for row, column in np.argwhere(w > 0):
            logits = TABLE[x[row, column]]
            log_probs = logits - np.log(np.exp(logits).sum())
            total -= log_probs[y[row, column]]
            hits += logits.argmax() == y[row, column]
            count += 1
    assert len(model.inputs) == 3 and count > 5
    assert 0 < hits < count  # masked positions guess 4, kept ones their own id: some right, some wrong
    assert result["masked_tokens"] == count
    assert result["masked_loss"] == pytest.approx(total / count, abs=1e-6)
    assert result["masked_accuracy"] == pytest.approx(hits / count, abs=1e-6)


def test_evaluate_mlm_scores_the_wrapped_rows_of_a_split():
    """``lmlab eval``'s masked-LM path: the split cut into ``[CLS] 4 tokens [SEP]`` rows, the last padded."""
    tokens = np.array([4, 5, 6, 7, 5, 5, 4, 6, 7, 7], np.int64)
    split = TokenSplit("test", [tokens], 0, len(tokens), 1)
    result = evaluate_mlm(TableEncoder(), TOKENIZER_WITH_SPECIALS, split, batch_size=2)
    rows = np.array([[CLS, 4, 5, 6, 7, SEP], [CLS, 5, 5, 4, 6, SEP], [CLS, 7, 7, PAD, PAD, SEP]])
    assert result["rows"] == 3
    direct = masked_scores(TableEncoder(), rows, TOKENIZER_WITH_SPECIALS, SPECIAL, batch_size=2)
    assert {k: result[k] for k in direct} == direct
    nll = -np.log([1 / 2, 1 / 4, 1 / 8, 1 / 8])[tokens - 4]  # every token masked alone sees TABLE[MASK]
    assert result["pseudo_tokens"] == 10
    assert result["pseudo_perplexity"] == pytest.approx(math.exp(nll.mean()), abs=1e-6)


TOKENIZER_WITH_SPECIALS = SimpleNamespace(vocab_size=V, special_tokens={"[PAD]": PAD, "[CLS]": CLS, "[SEP]": SEP,
                                                                        "[MASK]": MASK}, kind="fake")


# ---------------------------------------------------------------------------
# Causal LM: a slow reference loop
# ---------------------------------------------------------------------------


def reference_nats(nll_of, ids, block: int, stride: int | None) -> tuple[float, int]:
    """Summed ``-log p`` of every token but the first, by sliding windows (Hugging Face's perplexity guide).

    ``nll_of(inputs, targets)`` gives the ``-log p`` of each target after its window's inputs up to it.
    """
    stride = block if stride is None else stride
    ids = np.asarray(ids)
    scored = np.zeros(len(ids), bool)
    total, start = 0.0, 0
    while True:
        inputs = ids[start:start + block]
        targets = ids[start + 1:start + block + 1]
        nll = nll_of(inputs[:len(targets)], targets)
        first = 0 if start == 0 else block - stride  # the targets before it were scored by earlier windows
        for i in range(first, len(targets)):
            assert not scored[start + i + 1]
            scored[start + i + 1] = True
            total += nll[i]
        if start + block + 1 >= len(ids):
            break
        start += stride
    assert scored[1:].all() and not scored[0]
    return total, len(ids) - 1


def assert_matches(result: dict, nats: float, targets: int, utf8_bytes: int):
    assert result["tokens"] == targets and result["utf8_bytes"] == utf8_bytes
    assert result["nats"] == pytest.approx(nats, rel=1e-4)
    assert result["loss"] == pytest.approx(nats / targets, rel=1e-4)
    assert result["perplexity"] == pytest.approx(math.exp(nats / targets), rel=1e-4)
    assert result["bits_per_byte"] == pytest.approx(nats / (math.log(2) * utf8_bytes), rel=1e-4)


EXTRA = "Café, naïve émigré. 床前明月光，疑是地上霜。 — «Qu’en dira-t-on?»\n"


@pytest.fixture(scope="module")
def char_run(tmp_path_factory):
    """A tiny character Transformer (block 32) trained 30 steps on some Shakespeare and non-ASCII lines.

    The non-ASCII lines come first too: the character vocabulary is read from the start of the text.
    """
    root = tmp_path_factory.mktemp("eval")
    text = data_path("tinyshakespeare", "input.txt").read_text(encoding="utf-8")[:20_000]
    (root / "corpus.txt").write_text(EXTRA * 5 + "\n" + text + EXTRA * 40, encoding="utf-8")
    prepare(str(root / "corpus.txt"), root / "data", tokenizer="char", split=(0.9, 0.1, 0.0), split_order="ordered",
            clean={"dedup": False}, workers=1)
    train(TrainConfig(data=str(root / "data"), shape="debug", batch_size=8, max_steps=30, warmup_steps=5,
                      eval_interval=30, eval_batches=1, log_interval=10, learning_rate=1e-2), root / "run",
          log=lambda m: None)
    return root


def numpy_nll(model):
    """``-log p`` of the targets from ``model``'s logits: one eager call, log-softmax in float64 with NumPy."""
    def nll(inputs, targets):
        log_probs = log_softmax(np.asarray(model(np.asarray(inputs, np.int32)[None]))[0])  # (T, V)
        return -log_probs[np.arange(len(targets)), targets]

    return nll


@pytest.mark.parametrize("stride", [None, 7, 1])
def test_perplexity_and_bits_per_byte_of_a_text_match_a_reference_loop(char_run, tmp_path, stride):
    text = "ROMEO:\nBut soft, what light through yonder window breaks?\n" + EXTRA + "JULIET:\nAy me!\n"
    path = tmp_path / "text.txt"
    path.write_text(text, encoding="utf-8")
    run = load_run(char_run / "run")
    ids = run.tokenizer.encode(text)
    assert len(ids) == len(text) and len(text.encode("utf-8")) > len(text)  # multi-byte characters counted
    assert run.tokenizer.decode(ids) == text  # every character is in the vocabulary
    nats, targets = reference_nats(numpy_nll(run.model), ids, run.model.config.block_size, stride)
    assert_matches(evaluate_run(char_run / "run", text_file=path, stride=stride), nats, targets,
                   len(text.encode("utf-8")))


def test_a_prepared_split_matches_a_reference_loop(char_run):
    run = load_run(char_run / "run")
    tokens = split_tokens(char_run / "data", "valid")
    nats, targets = reference_nats(numpy_nll(run.model), tokens, run.model.config.block_size, None)
    # The split's bytes: every unit's UTF-8 text and one byte per end token (the manifest's count).
    eos = run.tokenizer.eos_id
    assert "<unk>" not in run.tokenizer.decode([int(t) for t in tokens]) and "床" in run.tokenizer.decode(tokens[-80:])
    utf8_bytes = sum(1 if t == eos else len(run.tokenizer.id_to_token(int(t)).encode("utf-8")) for t in tokens)
    manifest = json.loads((char_run / "data" / "manifest.json").read_text())
    assert manifest["splits"]["valid"]["utf8_bytes"] == utf8_bytes
    result = evaluate_run(char_run / "run", split="valid")
    assert_matches(result, nats, targets, utf8_bytes)


# ---------------------------------------------------------------------------
# An imported Hugging Face checkpoint, scored by transformers itself
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bpe_json() -> str:
    from lmlab.tokenizers import train_tokenizer

    return train_tokenizer("bpe", CORPUS, vocab_size=VOCAB - 1).hf_json()


@pytest.mark.parametrize("style", ["gpt2", "llama"])
def test_an_imported_checkpoint_scores_as_transformers_does(style, bpe_json, tmp_path):
    theirs = hf_model(style, seed=4)
    folder = tmp_path / "hf"
    theirs.save_pretrained(folder)
    (folder / "tokenizer.json").write_text(bpe_json, encoding="utf-8")
    import_hf(folder, tmp_path / "run", log=lambda *_: None)
    text = (MIXED + "\n") * 3
    path = tmp_path / "text.txt"
    path.write_text(text, encoding="utf-8")
    ids = transformers.AutoTokenizer.from_pretrained(folder)(text, add_special_tokens=False)["input_ids"]
    assert ids == load_run(tmp_path / "run").tokenizer.encode(text)
    block = theirs.config.max_position_embeddings
    assert len(ids) > 2 * block

    def torch_nll(inputs, targets):  # transformers' forward, log_softmax, gather
        with torch.no_grad():
            logits = theirs(torch.tensor(np.asarray(inputs)[None], dtype=torch.long)).logits[0].double()  # (T, V)
            picked = torch.log_softmax(logits, dim=-1).gather(-1, torch.tensor(np.asarray(targets))[:, None])
            return (-picked[:, 0]).numpy()

    for stride in (None, 13):
        nats, targets = reference_nats(torch_nll, ids, block, stride)
        assert_matches(evaluate_run(tmp_path / "run", text_file=path, stride=stride), nats, targets,
                       len(text.encode("utf-8")))
