"""User mistakes: each one becomes a one-line message that names the problem and the fix, never a traceback."""

from __future__ import annotations

import sys
from typing import Any, NoReturn

USAGE_ERROR = 2  # argparse's own exit code for a bad command line; every user mistake exits with it


class UserError(ValueError):
    """Bad input from the user (data, config, checkpoint path); the message says how to fix it."""


class ConfigError(UserError):
    """A config value out of range."""


def is_positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def check_positive_int(key: str, value: Any, error: type[UserError] = ConfigError) -> None:
    """The one positive-integer rule: `key=value must be a positive integer; set key >= 1`."""
    if not is_positive_int(value):
        raise error(f"{key}={value!r} must be a positive integer; set {key} >= 1")


def shown(value: Any) -> str:
    """A value as the user typed it, cut short: a 5,000-digit seed or a 300-character folder is named, not printed."""
    text = repr(value)
    return text if len(text) <= 160 else f"{text[:40]}...{text[-20:]} ({len(text)} characters)"


def refusal(message: str) -> str:
    """The one line a user's mistake prints on stderr."""
    return f"namegen: error: {message}"


def refuse(message: str) -> NoReturn:
    """Print the mistake's line and exit with USAGE_ERROR: no traceback."""
    print(refusal(message), file=sys.stderr)
    sys.exit(USAGE_ERROR)
