"""The ground floor: errors, atomic file writes, progress bars, fault injection and validated records.

Nothing here imports from the rest of lmlab, so every layer may use it.
"""
