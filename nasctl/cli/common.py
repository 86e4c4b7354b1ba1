"""What every command shares: the app, one-line errors (exit 2), JSON output, number
formatting and the options several commands take."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

from nasctl import __version__
from nasctl.errors import NasctlError

app = typer.Typer(
    name="nasctl",
    help=(
        "Hardware-aware neural-architecture search: curated IBN / fused-IBN search spaces, "
        "latency and memory estimation, contrastive task models.\n\n"
        "Start with `nasctl space search_spaces/mobilenetv2_32.yaml`."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)
console = Console()


def fail(message: str, code: int = 2) -> None:
    """One line on stderr, no traceback."""
    sys.stderr.write(f"error: {message}\n")
    raise typer.Exit(code)


def handle_errors(fn):
    """Bad input -> one line + exit 2; Ctrl-C -> exit 130."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except NasctlError as exc:
            fail(str(exc))
        except KeyboardInterrupt:
            sys.stderr.write("interrupted\n")
            raise typer.Exit(130) from None

    return wrapper


def stderr_progress(*columns: Any, quiet: bool, transient: bool = True) -> Any:
    """A rich ``Progress`` with ``columns`` on stderr (stdout stays clean for ``--json``),
    silent when ``quiet``; ``transient`` clears it when done."""
    from rich.progress import Progress

    return Progress(*columns, console=Console(stderr=True), transient=transient, disable=quiet)


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2) + "\n")


def human(n: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return f"{n:.0f}"


def short_name(name: str) -> str:
    """'/blocks/blocks.3/expand/expand.0/Conv' -> 'blocks.3/expand.0' (display only)."""
    parts = [p for p in name.strip("/").split("/") if p]
    if len(parts) > 1 and parts[-1][:1].isupper():
        parts = parts[:-1]
    kept = [p for i, p in enumerate(parts) if not (i + 1 < len(parts) and parts[i + 1].startswith(p + "."))]
    return "/".join(kept) or name


def _version(value: bool) -> None:
    if value:
        typer.echo(f"nasctl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        Optional[bool], typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = None,
) -> None:
    pass


ArchArg = Annotated[Optional[str], typer.Argument(metavar="[ARCH]", help="An arch.json file or an arch string.")]
SpaceOpt = Annotated[
    Optional[Path], typer.Option("--space", help="Take the arch from this space (seeded sample or --baseline).")
]
SeedOpt = Annotated[int, typer.Option(help="Sampling seed with --space.")]
BaselineOpt = Annotated[
    bool, typer.Option("--baseline", help="With --space: the space's baseline instead of a sample.")
]
DeviceOpt = Annotated[
    str,
    typer.Option(
        "--train-device",
        help="Where to train (not the latency target): cpu, auto (a CUDA GPU when there is one), cuda, cuda:N, mps.",
    ),
]
