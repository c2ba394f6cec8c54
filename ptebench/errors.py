"""The one domain exception of ptebench.

Every user-facing failure (bad input, bad option, unreadable bundle) raises
:class:`PtebenchError`; the CLI turns it into a message and exit code 1.  Anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations


class PtebenchError(Exception):
    """A failure caused by the input or the options, not by a bug in ptebench.

    ``file`` and ``line`` (1-based, in the decompressed text) are set when the error
    points at a place in an input; ``text`` is the offending text and ``expected``
    what the parser wanted there.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        text: str | None = None,
        expected: str | None = None,
    ) -> None:
        self.file = file
        self.line = line
        self.text = text
        self.expected = expected
        self.message = message
        super().__init__(self._render())

    def _render(self) -> str:
        where = ""
        if self.file is not None:
            where = f"{self.file}:{self.line}: " if self.line is not None else f"{self.file}: "
        out = where + self.message
        if self.text is not None:
            shown = self.text if len(self.text) <= 200 else self.text[:200] + "..."
            out += f"\n  got:      {shown!r}"
        if self.expected is not None:
            out += f"\n  expected: {self.expected}"
        return out
