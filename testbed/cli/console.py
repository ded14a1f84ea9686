"""The rich console every CLI command prints through.

On a terminal it is rich's own (tables fit the terminal's width). Anywhere else (a pipe, a
file, a CI log) rich would lay everything out at 80 columns and cut table cells with '…'
(`skysat-…`); there this console has no width limit, so tables take their natural width,
lines are never wrapped, and every value is printed in full.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console, ConsoleDimensions

#: Layout width off a terminal: wider than any table or line the CLI prints. Nothing is padded
#: to it (tables are not expanded, text is not justified), so it costs nothing.
UNLIMITED_WIDTH = 100_000


class CliConsole(Console):
    """A rich Console with no width limit when its file is not a terminal (see module doc).

    A width given explicitly (`CliConsole(width=100)`) is kept everywhere.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._fixed_width = kwargs.get("width") is not None

    @property  # type: ignore[override]
    def size(self) -> ConsoleDimensions:
        size = Console.size.fget(self)  # type: ignore[attr-defined]
        if self._fixed_width or self.is_terminal:
            return size
        return ConsoleDimensions(UNLIMITED_WIDTH, size.height)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        Console.size.fset(self, new_size)  # type: ignore[attr-defined]
        self._fixed_width = True
