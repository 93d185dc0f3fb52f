"""The one error type that the command line turns into a one-line message and exit status 2."""


class UsageError(Exception):
    """Bad input from the user: the message names what is wrong and how to fix it."""
