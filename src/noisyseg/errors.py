"""The one exception type for bad user input.

Everything the user can get wrong (a malformed file, an unknown class name, a rate outside [0, 1], a bad
config key, a NaN loss) raises :class:`NoisysegError` with a single line naming what is wrong. The CLI
prints that line and exits with code 2; it never shows a traceback for these.
"""


class NoisysegError(Exception):
    """Bad input or an unrecoverable run condition, described in one line for the user."""

    exit_code = 2
