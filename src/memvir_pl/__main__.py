"""``python -m memvir_pl``: list the commands."""

from memvir_pl.cli import listing

print(listing())
