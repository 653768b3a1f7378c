"""The one exception type the command line turns into a clear message instead of a traceback."""


class EarthvlError(Exception):
    """A problem with the user's input or environment, stated so that they can fix it."""
