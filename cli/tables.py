"""Plain-text tables of the command line: a header row, then the rows, columns aligned."""

from __future__ import annotations

from collections.abc import Sequence


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """The header and the rows as aligned columns, two spaces apart, with no trailing blanks.

    Args:
        header: The column names; every table printed has them.
        rows: The cells, each row as long as the header. A newline in a cell is shown as
            a space; nothing is cut short.

    Returns:
        The table's lines joined by newlines (the header alone when there are no rows).

    Raises:
        ValueError: A row with another number of cells than the header.
    """
    lines = [list(header)]
    for row in rows:
        if len(row) != len(header):
            raise ValueError(f"a row of {len(row)} cells under {len(header)} headers")
        lines.append([" ".join(str(cell).split()) if "\n" in str(cell) else str(cell)
                      for cell in row])  # fmt: skip
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )
