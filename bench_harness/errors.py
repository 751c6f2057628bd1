"""Errors meant for people: the CLI turns these into one sentence and exit code 2."""


class UserError(Exception):
    """A mistake in the user's input or environment that the user can fix.

    The message is one complete sentence that says what was wrong and what to do; the CLI prints
    it without a traceback and exits with code 2.
    """


class DeviceFailure(Exception):
    """The GPU reported an error that poisons the whole process (CUDA errors are sticky).

    The grid stops at once instead of recording every later run as failed for the wrong reason;
    records already written stay, and running the same command again resumes.
    """
