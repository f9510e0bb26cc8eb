"""The image specification: immutable steps with a stable content hash."""
