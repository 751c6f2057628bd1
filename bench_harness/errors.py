"""Errors meant for people: the CLI turns these into one sentence and exit code 2."""


class UserError(Exception):
    """A mistake in the user's input or environment that the user can fix.

    The message is one complete sentence that says what was wrong and what to do; the CLI prints
    it without a traceback and exits with code 2.
    """
