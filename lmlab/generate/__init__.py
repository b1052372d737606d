"""Decoding: samplers, the compiled KV-cache decoder and beam search.

Models are reached only through their contract (``call_with_cache``), never by family name.
"""
