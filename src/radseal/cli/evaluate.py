"""Subcommands (filled in by their package's work)."""


def register(sub) -> None:
    return None
