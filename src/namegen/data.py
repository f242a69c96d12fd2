"""Words in, (context -> next character) examples out.

A word list becomes, for every character position, the previous `block_size`
character ids and the id of the next one; '.' (id 0) pads the start and marks
the end, as in makemore. The vocabulary is built from the corpus and travels
inside every checkpoint (see `Vocab.to_list`).
"""

from __future__ import annotations

import importlib.resources
import logging
import random
import unicodedata
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Iterator

import lightning as L
import torch

from namegen.errors import UserError

log = logging.getLogger(__name__)

BOUNDARY = "."
SOURCES = ("names_first", "names_last", "file")
ALLOWED = set("abcdefghijklmnopqrstuvwxyz")


class DataError(UserError):
    """A user's data or data setting is unusable; the message says how to fix it."""


@dataclass(frozen=True)
class Vocab:
    """Characters <-> ids. Id 0 is the boundary '.', the rest are sorted characters."""

    chars: tuple[str, ...]  # chars[0] == BOUNDARY

    @classmethod
    def from_words(cls, words: list[str]) -> "Vocab":
        return cls((BOUNDARY, *sorted(set("".join(words)))))

    @classmethod
    def from_list(cls, chars: list[str]) -> "Vocab":
        if not chars or chars[0] != BOUNDARY or len(set(chars)) != len(chars):
            raise DataError(f"invalid vocabulary {chars!r}: expected '.' first and no repeats")
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


# ---------------------------------------------------------------------------
# reading words


def clean_words(lines: list[str], origin: str, max_len: int) -> list[str]:
    """Normalize raw lines into words of a-z.

    Policy: surrounding whitespace is stripped and blank lines skipped;
    letters are lowercased and accents stripped (é -> e); words that still
    hold anything outside a-z are dropped. One warning counts the words whose
    accents were stripped and those dropped.
    Duplicates are kept: in a name list they carry frequency. A word longer
    than `max_len` is refused, since it is almost surely not one word per line.
    """
    words, changed, dropped = [], 0, []
    for lineno, line in enumerate(lines, start=1):
        raw = line.strip()
        if not raw:
            continue
        lower = raw.lower()
        word = "".join(c for c in unicodedata.normalize("NFKD", lower) if not unicodedata.combining(c))
        if len(word) > max_len:
            raise DataError(
                f"{origin}:{lineno}: a word of {len(word)} characters (limit data.max_word_len={max_len});"
                " expected one word per line"
            )
        if not set(word) <= ALLOWED:
            dropped.append(raw)
            continue
        changed += word != lower
        words.append(word)
    if changed or dropped:
        example = f" (first dropped: {dropped[0]!r})" if dropped else ""
        log.warning(
            "%s: stripped accents from %d words, dropped %d words with characters outside a-z%s",
            origin, changed, len(dropped), example,
        )
    if not words:
        raise DataError(f"{origin}: no usable words (empty, blank, or nothing in a-z); give a file of one word per line")
    return words


def _package_lines(*files: str) -> list[str]:
    # The census files hold "NAME  freq  cumfreq  rank" per line; the name is the first field.
    root = importlib.resources.files("names")
    return [line.split()[0] for f in files for line in (root / f).read_text().splitlines() if line.strip()]


def load_words(source: str, path: str | None = None, max_len: int = 50) -> list[str]:
    """The corpus as a list of words, from a built-in source or a file of one word per line."""
    if source == "names_first":
        # The female and male lists share names; keep each once, in a fixed order.
        return sorted(set(clean_words(_package_lines("dist.female.first", "dist.male.first"), source, max_len)))
    if source == "names_last":
        return clean_words(_package_lines("dist.all.last"), source, max_len)
    if source == "file":
        if path is None:
            raise DataError("data=file needs a path: add data.path=/path/to/words.txt")
        p = Path(path).expanduser()
        if not p.is_file():
            raise DataError(f"data file not found: {str(p)!r}; check data.path")
        try:
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise DataError(f"{p}: not UTF-8 text ({e.reason} at byte {e.start}); save it as UTF-8") from None
        return clean_words(text.splitlines(), str(p), max_len)
    raise DataError(f"unknown data source {source!r}; choose one of {', '.join(SOURCES)}")


def split_words(words: list[str], seed: int) -> tuple[list[str], list[str], list[str]]:
    """makemore's split: shuffle with `random.seed(seed)`, cut at 80% and 90%."""
    words = list(words)
    random.Random(seed).shuffle(words)  # same order as random.seed(seed); random.shuffle(words)
    n1, n2 = int(0.8 * len(words)), int(0.9 * len(words))
    splits = words[:n1], words[n1:n2], words[n2:]
    if not all(splits):
        raise DataError(
            f"{len(words)} words are too few for a train/val/test split (each part needs at least one word); "
            "use a larger corpus"
        )
    return splits


def build_examples(words: list[str], vocab: Vocab, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """X: (N, block_size) context ids, Y: (N,) next id, one row per character and end of each word."""
    stoi = vocab.stoi
    xs, ys = [], []
    for w in words:
        context = [0] * block_size
        for ch in w + BOUNDARY:
            ix = stoi[ch]
            xs.append(context)
            ys.append(ix)
            context = context[1:] + [ix]
    return torch.tensor(xs, dtype=torch.long).view(-1, block_size), torch.tensor(ys, dtype=torch.long)


# ---------------------------------------------------------------------------
# batches


class RandomBatches:
    """An endless stream of random minibatches from in-memory tensors, makemore's way.

    Each item holds `steps_per_batch` minibatches, one per optimizer step:
    `X[ix], Y[ix]` of shapes (steps_per_batch, batch_size, block_size) and
    (steps_per_batch, batch_size), with `ix ~ randint(N)` as in makemore. The
    indices are drawn BLOCK steps at a time from a generator seeded by (seed,
    rank, block), so the minibatch of step s is the same whatever
    `steps_per_batch` is (it changes only the speed) and a run resumed at step s
    draws exactly the batches it would have drawn, whatever Lightning
    prefetched before the interruption.
    """

    BLOCK = 1000  # steps of indices per generator seeding: seeding costs more than drawing

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        seed: int,
        start_step=lambda: 0,
        rank: int = 0,
        steps_per_batch: int = 1,
    ):
        self.x, self.y, self.batch_size, self.seed, self.rank = x, y, batch_size, seed, rank
        self.start_step = start_step  # called at each iter(): the trainer's global step on resume
        self.steps_per_batch = steps_per_batch

    def block(self, index: int) -> torch.Tensor:
        """(BLOCK, batch_size) example indices of steps index*BLOCK ... (index+1)*BLOCK - 1."""
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + index) * 1_009 + self.rank)  # ranks differ
        return torch.randint(0, len(self.y), (self.BLOCK, self.batch_size), generator=g)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        step, k = self.start_step(), self.steps_per_batch
        cached, indices = -1, torch.empty(0)
        while True:
            parts, s = [], step
            while s < step + k:  # one slice of a block, or two when the batch straddles blocks
                b, offset = divmod(s, self.BLOCK)
                if b != cached:
                    cached, indices = b, self.block(b)
                take = min(step + k - s, self.BLOCK - offset)
                parts.append(indices[offset : offset + take])
                s += take
            ix = parts[0] if len(parts) == 1 else torch.cat(parts)
            yield self.x[ix], self.y[ix]  # (k, B, block_size), (k, B)
            step += k


class WholeSplit:
    """A split evaluated as one batch: the whole val or test set in a single forward pass."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.batch = (x, y)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        yield self.batch

    def __len__(self) -> int:
        return 1


class CharDataModule(L.LightningDataModule):
    """Corpus -> vocabulary -> 80/10/10 split by word -> example tensors -> batches.

    Example:
        >>> dm = CharDataModule(source="file", path="names.txt", block_size=3, batch_size=32, seed=42)
        >>> dm.setup("fit"); len(dm.vocab), dm.x["train"].shape  # (27, torch.Size([182625, 3]))

    Training batches carry `steps_per_batch` minibatches each (see `RandomBatches`).
    """

    def __init__(
        self,
        source: str = "names_first",
        path: str | None = None,
        block_size: int = 3,
        batch_size: int = 32,
        seed: int = 42,
        max_word_len: int = 50,
        steps_per_batch: int = 1,
    ):
        super().__init__()
        if source not in SOURCES:
            raise DataError(f"unknown data source {source!r}; choose one of {', '.join(SOURCES)}")
        for name, value in (("block_size", block_size), ("batch_size", batch_size), ("max_word_len", max_word_len)):
            if not isinstance(value, int) or value < 1:
                raise DataError(f"{name}={value!r} must be a positive integer; set data.{name} >= 1")
        if not isinstance(steps_per_batch, int) or steps_per_batch < 1:
            raise DataError(f"steps_per_batch={steps_per_batch!r} must be a positive integer; set steps_per_batch >= 1")
        self.steps_per_batch = steps_per_batch
        self.source, self.path, self.block_size = source, path, block_size
        self.batch_size, self.seed, self.max_word_len = batch_size, seed, max_word_len
        self.vocab: Vocab | None = None
        self.words: dict[str, list[str]] = {}
        self.x: dict[str, torch.Tensor] = {}
        self.y: dict[str, torch.Tensor] = {}

    def prepare(self) -> "CharDataModule":
        """Read, split and encode the corpus (idempotent). Call before building the model: it sets `vocab`."""
        if self.vocab is None:
            words = load_words(self.source, self.path, self.max_word_len)
            self.vocab = Vocab.from_words(words)
            for split, ws in zip(("train", "val", "test"), split_words(words, self.seed)):
                self.words[split] = ws
                self.x[split], self.y[split] = build_examples(ws, self.vocab, self.block_size)
        return self

    def setup(self, stage: str) -> None:
        self.prepare()

    def train_dataloader(self) -> RandomBatches:
        def start_step() -> int:
            return self.trainer.global_step if self.trainer is not None else 0

        rank = self.trainer.global_rank if self.trainer is not None else 0
        return RandomBatches(
            self.x["train"], self.y["train"], self.batch_size, self.seed, start_step, rank, self.steps_per_batch
        )

    def val_dataloader(self) -> WholeSplit:
        return WholeSplit(self.x["val"], self.y["val"])

    def test_dataloader(self) -> WholeSplit:
        return WholeSplit(self.x["test"], self.y["test"])
