"""The one error type the library raises for problems a user can act on."""


class PaletteError(ValueError):
    """A problem with the user's input, model or environment, with a message that says what to do."""
