"""Errors that describe a user mistake.

Anything raised as :class:`UserError` is printed by the CLI as one clear line
(no traceback) and ends the process with exit code 2. Raise it for bad input:
missing or unreadable files, wrong shapes, invalid configs, data that cannot be
processed (no sample found, outlines that cannot be matched, empty tiling...).
Programming errors stay ordinary exceptions.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input, reported as one line without traceback."""


class ConfigError(UserError):
    """An invalid or inconsistent configuration file."""


class DataError(UserError):
    """Input data that cannot be read or processed (says what and where)."""
