"""An imported Hugging Face checkpoint served: a tiny random GPT-2 and Llama built by ``transformers``, imported
by ``lmlab import``'s code, loaded as ``lmlab serve`` loads a run; the engine's greedy tokens, alone and batched,
equal ``transformers``' own ``generate``."""

from __future__ import annotations

import pytest

from tests.test_serve_batching import collect

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
interop = pytest.importorskip("tests.test_interop", reason="needs torch and transformers (the [dev] extra)")


@pytest.mark.parametrize("style", ["gpt2", "llama"])
def test_an_imported_checkpoint_serves_transformers_greedy_tokens(tmp_path, style):
    from lmlab.generate.samplers import SamplerConfig
    from lmlab.interop import import_hf
    from lmlab.serve import build_engine
    from lmlab.tokenizers import train_tokenizer

    model = interop.hf_model(style, seed=4)
    model.save_pretrained(tmp_path / "hf")
    bpe = train_tokenizer("bpe", interop.CORPUS, vocab_size=interop.VOCAB - 1)
    (tmp_path / "hf" / "tokenizer.json").write_text(bpe.hf_json(), encoding="utf-8")
    import_hf(tmp_path / "hf", tmp_path / "run", log=interop.quiet)
    engine, loaded = build_engine(tmp_path / "run", max_batch=3)
    try:
        prompts = [loaded.tokenizer.encode(text)[:n] for text, n in (("Shall I compare thee", 6), ("Hello, 世界", 3),
                                                                       ("The quick brown fox jumps", 9))]
        expected = [interop.hf_greedy(model, ids, 12) for ids in prompts]
        greedy = SamplerConfig(temperature=0)
        together = [collect(engine, ids, 12, greedy) for ids in prompts]  # three at once, three lengths
        assert all(done.wait(60) for done, _, _ in together)
        assert [tokens[0] for _, tokens, _ in together] == expected
    finally:
        engine.stop()
