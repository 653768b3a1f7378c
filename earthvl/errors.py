"""The one exception type the command line turns into a clear message instead of a traceback."""


from typing import Any


class EarthvlError(Exception):
    """A problem with the user's input or environment, stated so that they can fix it."""


def check_positive(options: Any, *names: str) -> None:
    """An EarthvlError naming the first of the integer options `names` of `options` that is set and below 1."""
    for name in names:
        value = getattr(options, name)
        if value is not None and value < 1:
            raise EarthvlError(f"{name} must be at least 1, got {value}")
