"""What tqdm's progress bars look like on stderr, for the tests of the commands that draw them."""

from __future__ import annotations

import re


def finished_bar(err: str, desc: str, total: int) -> bool:
    """Whether ``err`` holds tqdm's last drawing of a bar ``desc`` that counted to ``total``."""
    return re.search(rf"{re.escape(desc)}: 100%\|.*\| {total}/{total} \[", err) is not None


def no_bar(err: str) -> bool:
    return "%|" not in err and "it/s" not in err
