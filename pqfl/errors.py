"""Errors a user can fix. The CLI prints them as one line and exits with code 2."""


class PQFLInputError(ValueError):
    """Bad user input (config, data file, command-line option).

    The message names the field or file and says how to fix it.
    """
