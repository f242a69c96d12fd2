"""Words in, tensors and batches out: the LightningDataModule.

A word list becomes either windows (for every character position, the previous
`block_size` character ids and the id of the next one; '.' (id 0) pads the start
and marks the end, as in makemore) or whole-name sequences. The vocabulary is
built from the corpus and travels inside every checkpoint (see `Vocab.to_list`).
"""

from __future__ import annotations

from typing import Iterator

import lightning as L
import torch

from namegen.errors import check_positive_int
from namegen.vocab import Vocab
from namegen.words import SOURCES, DataError, load_words, split_words


def encode_words(words: list[str], vocab: Vocab) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, pos): every word's character ids followed by its end marker '.' (id 0), all words in one flat tensor,
    and each id's position within its word. Built from the words' bytes by table lookup, never a Python list
    per character (a list of ints costs ~36 bytes an item; an 8 MB corpus would take gigabytes)."""
    text = torch.frombuffer(bytearray("\n".join(words).encode() + b"\n"), dtype=torch.uint8)
    table = torch.zeros(256, dtype=torch.long)  # byte -> id; "\n" -> 0, the end marker
    for i, ch in enumerate(vocab.chars[1:], start=1):
        table[ord(ch)] = i
    ids = table[text.long()]
    ends = (text == ord("\n")).nonzero().squeeze(1)  # (W,) where each word's end marker is
    starts = torch.cat([torch.zeros(1, dtype=torch.long), ends[:-1] + 1])
    lengths = ends - starts + 1  # the word and its end marker
    pos = torch.arange(len(ids)) - torch.repeat_interleave(starts, lengths)
    return ids, pos


def build_examples(words: list[str], vocab: Vocab, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Windows: X (N, block_size) context ids, Y (N,) next id, one row per character and end of each word.

    Row j's context is the `block_size` ids before position j of its word, '.' (0) where the word has not
    begun: makemore's sliding window, as one gather over the flat ids.
    """
    ids, pos = encode_words(words, vocab)
    x = torch.zeros(len(ids), block_size, dtype=torch.long)
    for k in range(block_size):  # column k looks back `back` positions: a column at a time, no (N, T) index
        back = block_size - k
        x[back:, k] = ids[:-back]
        x[:, k].masked_fill_(pos < back, 0)  # before the word's start: padding
    return x, ids


def build_sequences(words: list[str], vocab: Vocab, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Whole names: X (N, block_size) = '.' then the word, Y (N, block_size) = the word then '.', one row per word.

    Padding is '.' in X and -1 in Y, where the loss ignores it (makemore's layout).
    """
    ids, pos = encode_words(words, vocab)
    row = (pos == 0).cumsum(0) - 1  # each id's word
    x = torch.zeros(len(words), block_size, dtype=torch.long)
    y = torch.full((len(words), block_size), -1, dtype=torch.long)
    y[row, pos] = ids
    chars = ids != 0  # a word's characters shift one right in X; its end marker has no next position
    x[row[chars], pos[chars] + 1] = ids[chars]
    return x, y


CONTEXTS = {"window": build_examples, "sequence": build_sequences}


# ---------------------------------------------------------------------------
# batches


class RandomBatches:
    """An endless stream of random minibatches from in-memory tensors, makemore's way.

    Each item is `X[ix], Y[ix]` with `ix ~ randint(N)` of shape (batch_size,). The
    indices are drawn BLOCK batches at a time from a generator seeded by (seed, rank,
    block), so the n-th minibatch depends only on n: a run resumed at batch n draws
    exactly the batches it would have drawn, whatever Lightning prefetched before
    the interruption.
    """

    BLOCK = 1000  # batches of indices per generator seeding: seeding costs more than drawing

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int, start_batch=lambda: 0,
                 rank: int = 0):
        self.x, self.y, self.batch_size, self.seed, self.rank = x, y, batch_size, seed, rank
        self.start_batch = start_batch  # called at each iter(): the index of the batch to start from on resume

    def block(self, index: int) -> torch.Tensor:
        """(BLOCK, batch_size) example indices of batches index*BLOCK ... (index+1)*BLOCK - 1."""
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + index) * 1_009 + self.rank)  # ranks differ
        return torch.randint(0, len(self.y), (self.BLOCK, self.batch_size), generator=g)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = self.start_batch()
        cached, indices = -1, torch.empty(0)
        while True:
            b, offset = divmod(n, self.BLOCK)
            if b != cached:
                cached, indices = b, self.block(b)
            ix = indices[offset]
            yield self.x[ix], self.y[ix]  # (B, block_size), (B,) or (B, block_size)
            n += 1


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

    `context` is what the model reads: `window`, the previous `block_size` characters
    for one next character (the MLP); `sequence`, the whole name for every next
    character at once (the Transformer), with `block_size` None meaning the longest
    word + 1.

    Example:
        >>> dm = CharDataModule(source="file", path="names.txt", block_size=3, batch_size=32, seed=42).prepare()
        >>> len(dm.vocab), dm.x["train"].shape  # (27, torch.Size([182625, 3]))
    """

    def __init__(
        self,
        source: str = "names_first",
        path: str | None = None,
        block_size: int | None = 3,
        batch_size: int = 32,
        seed: int = 42,
        max_word_len: int = 50,
        context: str = "window",
    ):
        super().__init__()
        if source not in SOURCES:
            raise DataError(f"unknown data source {source!r}; choose one of {', '.join(SOURCES)}")
        if context not in CONTEXTS:
            raise DataError(f"unknown context {context!r}; choose one of {', '.join(CONTEXTS)}")
        for name, value in (("batch_size", batch_size), ("max_word_len", max_word_len)):
            check_positive_int(f"data.{name}", value, DataError)
        if block_size is not None or context == "window":
            check_positive_int("data.block_size", block_size, DataError)
        self.source, self.path, self.block_size, self.context = source, path, block_size, context
        self.batch_size, self.seed, self.max_word_len = batch_size, seed, max_word_len
        self.vocab: Vocab | None = None
        self.words: dict[str, list[str]] = {}
        self.x: dict[str, torch.Tensor] = {}
        self.y: dict[str, torch.Tensor] = {}

    def prepare(self) -> "CharDataModule":
        """Read, split and encode the corpus (idempotent). Call before building the model: it sets `vocab`
        (and `block_size` for whole-name sequences)."""
        if self.vocab is None:
            words = load_words(self.source, self.path, self.max_word_len)
            self.vocab = Vocab.from_words(words)
            longest = max(map(len, words)) + 1  # the word and its end marker
            if self.context == "sequence":
                if self.block_size is None:
                    self.block_size = longest
                elif self.block_size < longest:
                    raise DataError(f"data.block_size={self.block_size} is shorter than the longest name + 1 "
                                    f"({longest}); set it to {longest} or leave it null")
            for split, ws in zip(("train", "val", "test"), split_words(words, self.seed)):
                self.words[split] = ws
                self.x[split], self.y[split] = CONTEXTS[self.context](ws, self.vocab, self.block_size)
        return self

    def setup(self, stage: str) -> None:
        self.prepare()

    def train_dataloader(self) -> RandomBatches:
        def start_batch() -> int:
            # an optimizer step takes accumulate_grad_batches batches of the stream. (A checkpoint written between
            # them, when val_check_interval is not a multiple, has lost its half-accumulated gradient anyway.)
            trainer = self.trainer
            return trainer.global_step * trainer.accumulate_grad_batches if trainer is not None else 0

        rank = self.trainer.global_rank if self.trainer is not None else 0
        return RandomBatches(self.x["train"], self.y["train"], self.batch_size, self.seed, start_batch, rank)

    def val_dataloader(self) -> WholeSplit:
        return WholeSplit(self.x["val"], self.y["val"])

    def test_dataloader(self) -> WholeSplit:
        return WholeSplit(self.x["test"], self.y["test"])
