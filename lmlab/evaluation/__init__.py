"""Measuring a trained model: perplexity and bits per byte, masked-token scores, fill-mask."""
