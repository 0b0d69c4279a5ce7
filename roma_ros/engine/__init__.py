"""The streaming ROMA model runtime and its backends."""
