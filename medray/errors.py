"""The one error type a user sees: a sentence naming the file, row or key and what to do."""


class MedrayError(Exception):
    """A problem with the user's input or setup, reported as one line instead of a traceback."""
