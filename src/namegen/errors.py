"""User mistakes: each one becomes a one-line message that names the problem and the fix, never a traceback."""


class UserError(ValueError):
    """Bad input from the user (data, config, checkpoint path); the message says how to fix it."""


class ConfigError(UserError):
    """A config value out of range."""
