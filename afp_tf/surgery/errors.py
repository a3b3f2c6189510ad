"""The exception raised for every surgery problem caused by the caller's model or request."""


class SurgeryError(ValueError):
    """A model or a removal request that channel surgery cannot handle, with the reason."""
