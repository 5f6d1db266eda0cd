"""Sub-commands that are not owned by a single stage module."""
