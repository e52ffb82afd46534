"""The service's input errors (reported by the command line as one paragraph naming the argument)."""


class AigcError(ValueError):
    """Bad input to the AIGC service: a mask, image batch, step count, dataset or weights file."""
