"""Quiet by default: TensorFlow's, XLA's and absl's start-up chatter kept off the user's terminal.

TensorFlow's C++ runtime writes to file descriptor 2 before any setting can silence it (absl's
"All log messages before absl::InitializeLog() is called" and its ``I0000 ... cudart_stub.cc``
lines; a machine without a GPU also gets "failed call to cuInit"). So the command line points
descriptor 2 at a pipe and a thread copies each line to the real stderr unless it is such noise.
lmlab's own messages, warnings and errors pass untouched; ``lmlab --verbose`` turns the filter off.
"""

from __future__ import annotations

import atexit
import os
import re
import sys
import threading
import warnings

NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IW]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ \S+:\d+\] .*"  # absl/glog INFO and WARNING lines
    r"|E\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ \S+:\d+\] .*(cuInit|CUDA|cuda|TensorRT|TF-TRT).*"  # no GPU here: not news
    r"|To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags\."
    r"|WARNING:absl:.*"
    r")\s*$")
MAYBE_NOISE = re.compile(rb"^(W|I|E|To )")  # a partial line that may yet turn out to be noise


_TERMINAL = {"stderr": None}  # whether descriptor 2 was a terminal before the filter took it


def stderr_is_terminal() -> bool:
    """Whether the user's stderr is a terminal (progress bars on), as it was before :func:`filter_stderr`."""
    known = _TERMINAL["stderr"]
    return os.isatty(2) if known is None else known


def is_noise(line: str) -> bool:
    return bool(NOISE.match(line))


def filter_stderr():
    """From now on, lines written to descriptor 2 (by Python or C++) reach the terminal only if not noise.

    Returns the function that puts descriptor 2 back and lets the last lines through (also run at exit).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    warnings.filterwarnings("ignore", module=r"(keras|tensorflow|jax|absl|google)(\.|$)")
    _TERMINAL["stderr"] = os.isatty(2)
    try:
        sys.stderr.flush()
        terminal = os.dup(2)
        read_end, write_end = os.pipe()
        os.dup2(write_end, 2)
        os.close(write_end)
    except OSError:  # no descriptor 2 to filter (e.g. a closed stderr): nothing to do
        return lambda: None
    out = os.fdopen(terminal, "wb", buffering=0)

    def copy():
        # Whole lines are judged; a partial line is let through at once (a progress bar redraws with
        # carriage returns, never a newline) unless it could be the start of a noise line.
        pending = b""
        while True:
            chunk = os.read(read_end, 1 << 16)
            if not chunk:
                break
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                if not is_noise(line.decode("utf-8", "replace")):
                    out.write(line + b"\n")
            if pending and not MAYBE_NOISE.match(pending):
                out.write(pending)
                pending = b""
        if pending and not is_noise(pending.decode("utf-8", "replace")):
            out.write(pending)
        os.close(read_end)

    thread = threading.Thread(target=copy, name="lmlab-stderr", daemon=True)
    thread.start()

    done = []

    def restore():  # close our end so the thread sees the end of the pipe, then let it finish
        if done:
            return
        done.append(True)
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(terminal, 2)  # later writes (and child processes still running) go straight to the terminal
        thread.join(timeout=2)
        _TERMINAL["stderr"] = None

    atexit.register(restore)
    return restore
