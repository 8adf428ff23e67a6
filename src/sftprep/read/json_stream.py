"""A large JSON array read element by element (constant memory: the buffer holds the element being read).

A scanner finds the top-level elements' bytes (skipping strings with their escapes, counting brackets) and each
element is then parsed as a JSONL line is (records.parse_line), so a bad element is one reject and the read goes
on. A file whose structure breaks (an unclosed array, a stray character between elements) ends with one
`invalid_json` record at the element where it broke. Arrays up to WHOLE_MAX bytes are parsed whole instead
(records.py), as before: the same records for a valid file.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import IO

WHOLE_MAX = 64 << 20  # bytes on disk: a plain JSON array up to this is parsed whole
WHOLE_MAX_COMPRESSED = 8 << 20  # a compressed one (it expands, ~4-10x for text)
CHUNK = 1 << 20
_STRUCT = re.compile(rb'["\[\]{},]')
_STRING_TAIL = re.compile(rb'(?:[^"\\]|\\.)*"', re.S)
_WS = b" \t\r\n"
_NON_WS = re.compile(rb"[^ \t\r\n]")
_BOM = b"\xef\xbb\xbf"


class BrokenArray(ValueError):
    """The array's structure is broken at `offset` (bytes from the start of the decompressed file)."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(f"{message} at byte {offset}")
        self.offset = offset


def iter_elements(f: IO[bytes]) -> Iterator[tuple[int, int, bytes]]:
    """(1-based index, byte offset, element bytes) of the top-level array in `f`; BrokenArray when the
    structure breaks (after the elements before it)."""
    s = _Scanner(f)
    s.expect_open()
    yield from s.elements()


class _Scanner:
    def __init__(self, f: IO[bytes]) -> None:
        self.f = f
        self.buf = b""
        self.base = 0  # file offset of buf[0]
        self.i = 0
        self.start: int | None = None  # where the element being read begins

    def more(self) -> bool:
        """Read more bytes (at least as many as are held: amortised linear for huge elements)."""
        cut = self.start if self.start is not None else self.i
        if cut:
            self.buf, self.base = self.buf[cut:], self.base + cut
            self.i -= cut
            if self.start is not None:
                self.start -= cut
        chunk = self.f.read(max(CHUNK, len(self.buf)))
        if not chunk:
            return False
        self.buf += chunk
        return True

    def skip_ws(self) -> int:
        """Index of the next non-whitespace byte (reading more as needed), or -1 at the end of the file."""
        while True:
            m = _NON_WS.search(self.buf, self.i)
            if m is not None:
                return m.start()
            self.i = len(self.buf)
            if not self.more():
                return -1

    def expect_open(self) -> None:
        while len(self.buf) < 3 and self.more():
            pass
        if self.buf.startswith(_BOM):
            self.i = len(_BOM)
        j = self.skip_ws()
        if j < 0 or self.buf[j : j + 1] != b"[":
            raise BrokenArray("expected a JSON array", self.base + max(j, 0))
        self.i = j + 1

    def elements(self) -> Iterator[tuple[int, int, bytes]]:
        index = 0
        need_value = False  # after a comma: an element must follow
        while True:
            j = self.skip_ws()
            if j < 0:
                raise BrokenArray("the array is not closed (the file ends inside it)", self.base + len(self.buf))
            c = self.buf[j : j + 1]
            if c == b"]":
                if need_value:
                    raise BrokenArray("a comma before ]", self.base + j)
                return
            if index and not need_value:
                if c != b",":
                    raise BrokenArray(f"expected , or ] between elements, got {c!r}", self.base + j)
                self.i, need_value = j + 1, True
                continue
            if c == b",":
                raise BrokenArray("an empty element", self.base + j)
            self.start, self.i = j, j
            end = self._element_end()
            index += 1
            yield index, self.base + self.start, self.buf[self.start : end].rstrip(_WS)
            self.i, self.start, need_value = end, None, False

    def _element_end(self) -> int:
        """The end of the element starting at self.start (its last bracket, or before the , or ] after it)."""
        depth = 0
        while True:
            m = _STRUCT.search(self.buf, self.i)
            if m is None:
                self.i = len(self.buf)
                if not self.more():
                    raise BrokenArray("the array is not closed (the file ends inside an element)", self.base + self.i)
                continue
            ch = m.group()
            if ch == b'"':
                tail = _STRING_TAIL.match(self.buf, m.end())
                if tail is None:  # the string goes on past what is read
                    self.i = m.start()
                    if not self.more():
                        raise BrokenArray("a string is not closed", self.base + self.i)
                    continue
                self.i = tail.end()
            elif ch in b"[{":
                depth += 1
                self.i = m.end()
            elif ch in b"]}":
                if depth == 0:  # the array's own ]: a scalar element ends before it
                    return m.start()
                depth -= 1
                self.i = m.end()
                if depth == 0:
                    return self.i
            elif depth == 0:  # a , after a scalar element
                return m.start()
            else:
                self.i = m.end()
