"""Characters <-> ids: the vocabulary, built from the corpus, that travels inside every checkpoint."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from namegen.errors import UserError, shown

BOUNDARY = "."  # id 0: pads the start of a name and marks its end, as in makemore


@dataclass(frozen=True)
class Vocab:
    """Characters <-> ids. Id 0 is the boundary '.', the rest are sorted characters."""

    chars: tuple[str, ...]  # chars[0] == BOUNDARY

    @classmethod
    def from_words(cls, words: list[str]) -> "Vocab":
        return cls((BOUNDARY, *sorted(set("".join(words)))))

    @classmethod
    def from_list(cls, chars: list[str]) -> "Vocab":
        if not isinstance(chars, (list, tuple)) or not chars:
            raise UserError(f"invalid vocabulary {shown(chars)}: expected a list of characters")
        bad = [c for c in chars if not (isinstance(c, str) and len(c) == 1 and c.isprintable() and not c.isspace())]
        if bad:  # printed, a control character would drive the terminal: shown escaped, and refused
            raise UserError(f"invalid vocabulary entry {shown(bad[0])}: each must be a single printable character")
        if chars[0] != BOUNDARY or len(set(chars)) != len(chars):
            raise UserError(f"invalid vocabulary {shown(''.join(chars))}: expected '.' first and no repeats")
        return cls(tuple(chars))

    def to_list(self) -> list[str]:
        return list(self.chars)

    def __len__(self) -> int:
        return len(self.chars)

    @cached_property
    def stoi(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.chars)}

    def encode(self, word: str) -> list[int]:
        return [self.stoi[c] for c in word]

    def decode(self, ids: list[int]) -> str:
        return "".join(self.chars[i] for i in ids)


