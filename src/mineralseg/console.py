"""What the package prints for people: quiet by default, detail with ``--verbose``.

By default each stage shows one progress bar when its output is a terminal and
nothing when it is not (a log file or a pipe gets the few summary lines the CLI
prints); third-party chatter (Lightning's "GPU available", tips, model summary,
known harmless warnings) is hidden. ``mineralseg --verbose ...`` (or
``MINERALSEG_VERBOSE=1``) brings all of it back. The setting lives in the
environment so that processes a launcher starts (DDP) follow it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from typing import TextIO

__all__ = ["VERBOSE_ENV", "is_verbose", "quiet_third_party", "set_verbose", "show_progress"]

VERBOSE_ENV = "MINERALSEG_VERBOSE"
# Loggers whose INFO lines (hardware summary, tips, "`Trainer.fit` stopped") are detail.
_CHATTY_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning")
# Warnings that say nothing a user can act on.
_HARMLESS_WARNINGS = (
    r".*isinstance\(treespec, LeafSpec\).*",
    r".*is not supported by the model summary.*",
    r".*does not have many workers.*",
    r".*exists and is not empty.*",
    r".*The dirpath has changed from.*",
    r".*smaller than the logging interval.*",
)


def set_verbose(on: bool) -> None:
    """Switch detailed output on or off for this process and the ones it starts."""
    if on:
        os.environ[VERBOSE_ENV] = "1"
    else:
        os.environ.pop(VERBOSE_ENV, None)


def is_verbose() -> bool:
    """True when detailed output was asked for (``--verbose`` or ``MINERALSEG_VERBOSE=1``)."""
    return os.environ.get(VERBOSE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def show_progress(stream: TextIO | None = None) -> bool:
    """Draw progress bars on ``stream`` (default stdout)? Yes on a terminal or when verbose."""
    stream = sys.stdout if stream is None else stream
    if is_verbose():
        return True
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or replaced stream
        return False


@contextlib.contextmanager
def quiet_third_party() -> Iterator[None]:
    """Hide Lightning's INFO chatter and known harmless warnings inside the block
    (unless verbose); logger levels are restored afterwards."""
    if is_verbose():
        yield
        return
    loggers = [logging.getLogger(name) for name in _CHATTY_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            for pattern in _HARMLESS_WARNINGS:
                warnings.filterwarnings("ignore", message=pattern)
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
