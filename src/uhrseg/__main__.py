"""``python -m uhrseg`` runs the command line."""

from .cli.main import console

console()
