"""One exception type for every error a user can act on.

The CLI prints ``SynthdbError`` as a single line (``error: ...``) and exits non-zero; anything
else is a bug and keeps its traceback. Messages name the thing that is wrong and the fix.
"""


class SynthdbError(Exception):
    """An error caused by input or environment, with a message that says what to do."""
