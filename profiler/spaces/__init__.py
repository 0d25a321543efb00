"""Search spaces as data (import without torch)."""
