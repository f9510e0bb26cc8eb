"""A simulator of the Vast.ai REST API whose instances are real local processes or containers."""
