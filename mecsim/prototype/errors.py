class PrototypeError(ValueError):
    """The prototype cannot be built or run as asked; the message says which setting and why."""
