"""Errors a user can fix. The CLI prints them as one line and exits with code 2."""


class PQFLInputError(ValueError):
    """Bad user input (config, data file, command-line option).

    The message names the field or file and says how to fix it.
    """


class PQFLRunError(RuntimeError):
    """A run that cannot go on (e.g. fewer clients than the quorum finished a round).

    The message says what failed and how to continue; the last checkpoint is intact.
    """
