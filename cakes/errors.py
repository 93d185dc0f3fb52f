"""The one error type that the command line turns into a one-line message and exit status 2."""

# How torch's DataLoader re-raises an exception from a worker: the type, rebuilt from a message that holds
# the worker's whole traceback, whose last line is `cakes.errors.UsageError: <the message>`.
WORKER_PREFIX = 'Caught UsageError in DataLoader worker'


class UsageError(Exception):
    """Bad input from the user: the message names what is wrong and how to fix it. Raised in a DataLoader worker,
    it reaches the main process as the same message (not the worker's traceback)."""

    def __init__(self, message=''):
        super().__init__(worker_message(message) if str(message).startswith(WORKER_PREFIX) else message)


def worker_message(wrapped):
    """The UsageError's own message inside the text DataLoader rebuilds it from."""
    head, _, message = str(wrapped).rpartition('UsageError: ')
    return message.strip() if head.startswith(WORKER_PREFIX) and message.strip() else wrapped
