"""The ``nasctl`` command line: one module per command group, each parsing options,
calling the library and rendering. No search, budget or objective logic lives here."""

from nasctl.cli import expert, latency, pretrain, search, space, supernet, zeroshot  # noqa: F401  (register the commands)
from nasctl.cli.common import app

__all__ = ["app", "main"]


def main() -> None:
    app()
