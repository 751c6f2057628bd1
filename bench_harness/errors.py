"""Errors meant for people, and what a run contains when plugin code fails.

The CLI turns a :class:`UserError` into one sentence and exit code 2; a :class:`DeviceFailure` or
a :class:`StoreError` stops the grid with one sentence, leaving every record written so far intact.
Everything else that plugin code raises fails only the run it happened in (:data:`CONTAINED`).
"""


class UserError(Exception):
    """A mistake in the user's input or environment that the user can fix.

    The message is one complete sentence that says what was wrong and what to do; the CLI prints
    it without a traceback and exits with code 2.
    """


class StoreError(UserError):
    """The results folder cannot be written (a full disk, a permission, a path that is a file).

    No later run could store its record either, so the grid stops at once instead of training runs
    whose results would be lost; what was written so far stays, and the same command resumes.
    """


class DeviceFailure(Exception):
    """The GPU reported an error that poisons the whole process (CUDA errors are sticky).

    The grid stops at once instead of recording every later run as failed for the wrong reason;
    records already written stay, and running the same command again resumes.
    """


STOPS_THE_GRID = (DeviceFailure, StoreError)
"""Errors raised inside a run that no other run could escape either: they end the command."""

CONTAINED = (Exception, SystemExit)
"""What a run's failure may be, plugin code included: any exception, and ``sys.exit()`` too, which
would otherwise end the whole grid with no message and no record. Only ``KeyboardInterrupt`` (the
user's Ctrl-C) and the errors in :data:`STOPS_THE_GRID` leave the run and end the command."""


class PluginFault(Exception):
    """A plugin's answer broke the contract (a score of the wrong shape, a NaN, ...).

    Raised by the harness's own checks, so no frame of the plugin is on the traceback; ``kind``
    (``pruner``, ``dataset`` or ``model``) says whose answer it was, so the failed run's record can
    name the plugin's package all the same.
    """

    def __init__(self, message: str, kind: str = "pruner") -> None:
        super().__init__(message)
        self.kind = kind


class PluginTypeFault(PluginFault, TypeError):
    """A plugin answered with the wrong type (also a ``TypeError``)."""


class PluginValueFault(PluginFault, ValueError):
    """A plugin answered with a wrong value or shape (also a ``ValueError``)."""
