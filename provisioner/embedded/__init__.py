"""Real servers started on loopback with their own config and data directories (demo and tests)."""
