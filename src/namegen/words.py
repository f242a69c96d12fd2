"""Reading a corpus: one word per line in, clean words of a-z and makemore's split out.

No torch or Lightning here: `train.py` checks a data file before the training stack loads.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import logging
import random
import unicodedata
from pathlib import Path

from namegen.errors import UserError
from namegen.paths import regular_file

log = logging.getLogger(__name__)

SOURCES = ("names_first", "names_last", "file")
ALLOWED = set("abcdefghijklmnopqrstuvwxyz")
BUILT_IN = {"names_first": ("dist.female.first", "dist.male.first"), "names_last": ("dist.all.last",)}
SNIFF = 1 << 16  # bytes of a data file looked at for binary content before it is read


class DataError(UserError):
    """A user's data or data setting is unusable; the message says how to fix it."""


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
        if raw.isascii() and raw.isalpha() and raw.islower():  # already a-z: most lines, kept as they are
            lower = word = raw
        else:
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
        return sorted(set(clean_words(_package_lines(*BUILT_IN[source]), source, max_len)))
    if source == "names_last":
        return clean_words(_package_lines(*BUILT_IN[source]), source, max_len)
    if source == "file":
        p = check_data_path(path)
        try:
            text = p.read_text(encoding="utf-8-sig")  # a byte-order mark is not part of the first word
        except UnicodeDecodeError as e:
            raise DataError(f"{p}: not UTF-8 text ({e.reason} at byte {e.start}); save it as UTF-8") from None
        except OSError as e:
            raise DataError(f"{p}: cannot be read ({e.strerror}); check data.path") from None
        return clean_words(text.splitlines(), str(p), max_len)
    raise DataError(f"unknown data source {source!r}; choose one of {', '.join(SOURCES)}")


def check_data_path(path: str | None) -> Path:
    """The data file, or a DataError that says what the path is instead of a readable regular file of text."""
    if path is None:
        raise DataError("data=file needs a path: add data.path=/path/to/words.txt")
    try:
        p = regular_file(path, "data.path", "a file of one word per line")
    except UserError as e:
        raise DataError(str(e)) from None
    with open(p, "rb") as f:
        head = f.read(SNIFF)
    if b"\0" in head:  # no text file holds NUL bytes; reading a large binary file would only waste memory
        raise DataError(f"data.path={str(p)!r} holds binary data (a NUL byte at byte {head.index(0)}), not text; "
                        "give a text file of one word per line")
    return p


def source_files(source: str, path: str | None) -> list[Path]:
    """The files a corpus is read from: data.path, or the `names` package's census lists."""
    if source == "file":
        return [check_data_path(path)]
    root = importlib.resources.files("names")
    return [Path(str(root / f)) for f in BUILT_IN[source]]


def corpus_bytes(source: str, path: str | None) -> int:
    """The size of what the corpus is read from: it bounds the words and examples the data can hold."""
    return sum(f.stat().st_size for f in source_files(source, path))


def fingerprint(source: str, path: str | None) -> dict[str, object]:
    """What identifies a corpus: its files' size and SHA-256. A resume on another corpus is refused by it."""
    digest, size = hashlib.sha256(), 0
    for f in source_files(source, path):
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
                size += len(chunk)
    return {"source": source, "path": path if source == "file" else None, "bytes": size, "sha256": digest.hexdigest()}


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
