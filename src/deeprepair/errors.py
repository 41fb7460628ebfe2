"""User-facing errors: one line that says what was wrong and how to fix it."""


class DeepRepairError(Exception):
    """An error caused by the user's input (a path, a shape, a flag).

    The CLI prints ``error: <message>`` and exits with status 2, without a traceback.
    """
