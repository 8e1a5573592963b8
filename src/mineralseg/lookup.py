"""Case-insensitive name look-up that suggests the closest valid name.

The one implementation behind every name registry of the package (architectures,
encoders, losses, resampling filters, minerals): unknown names are answered with the
valid list and the closest match, as a :class:`~mineralseg.errors.ConfigError`.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping

from mineralseg.errors import ConfigError

#: How many valid names an error message lists before it says "... and N more".
_MAX_LISTED = 80


def closest(name: str, valid: Iterable[str]) -> str | None:
    """The valid name most similar to ``name`` (``None`` when nothing is close)."""
    matches = difflib.get_close_matches(name.lower(), list(valid), n=1, cutoff=0.6)
    return matches[0] if matches else None


def unknown_name_error(
    kind: str,
    name: object,
    valid: Iterable[str],
    *,
    aliases: Mapping[str, str] | None = None,
    hint: str = "",
) -> ConfigError:
    """A :class:`ConfigError` for an unknown ``kind`` name, listing the valid ones.

    The suggestion is searched among the valid names and the aliases (an alias is
    suggested as its canonical name).
    """
    valid = list(valid)
    aliases = dict(aliases or {})
    guess = closest(str(name), [*valid, *aliases]) if isinstance(name, str) else None
    guess = aliases.get(guess, guess)
    did_you_mean = f" (did you mean '{guess}'?)" if guess else ""
    listed = ", ".join(valid[:_MAX_LISTED])
    if len(valid) > _MAX_LISTED:
        listed += f", ... and {len(valid) - _MAX_LISTED} more"
    return ConfigError(f"unknown {kind} {name!r}{did_you_mean}; valid {_plural(kind)}: {listed}{hint}")


def _plural(kind: str) -> str:
    """English plural of a one-word ``kind`` ("loss" -> "losses", "encoder" -> "encoders")."""
    return kind + ("es" if kind.endswith(("s", "x", "sh", "ch")) else "s")


def resolve(name: object, valid: Iterable[str], aliases: Mapping[str, str], *, kind: str, hint: str = "") -> str:
    """Map ``name`` (any case, or an alias) to its canonical spelling.

    Parameters
    ----------
    name : str
        What the user wrote.
    valid : iterable of str
        Canonical names (lower case).
    aliases : mapping
        Other accepted spellings (lower case) -> canonical name.
    kind : str
        What is looked up ("architecture", "encoder"), for the message.

    Raises
    ------
    ConfigError
        If ``name`` is not a string or matches no valid name or alias.
    """
    valid = list(valid)
    if not isinstance(name, str):
        raise unknown_name_error(kind, name, valid, aliases=aliases, hint=hint)
    key = name.strip().lower()
    if key in aliases:
        return aliases[key]
    if key in valid:
        return key
    raise unknown_name_error(kind, name, valid, aliases=aliases, hint=hint)
