"""The one base class of failures a user can act on: the `ant` command prints the message as
one `error:` line (the traceback only with -v), and never as a crash."""


class UserError(Exception):
    """Bad input, a missing prerequisite or an unreachable host; the message says what to do."""


class ConfigError(UserError, ValueError):
    """A config file that cannot be read or does not validate; the message names the file."""
