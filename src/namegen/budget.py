"""The one estimate of what a run (or a loaded checkpoint) will allocate, made by arithmetic before anything is.

Parameters are counted from the architecture's formula, not by building the model (a 100,000-layer model would
take minutes just to build on the meta device); the data tensors from the corpus's size on disk, which bounds
its examples (every example is at least one byte of the file); a training step from the batch's activations.
No torch here: a run is refused before torch is asked for memory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from namegen.errors import ConfigError

FLOAT, INDEX = 4, 8  # bytes of a float32 value, of an int64 id or index
# per parameter: the weight, its gradient, two optimizer moments, and one copy the diagnostics clone
BYTES_PER_PARAMETER = 5 * FLOAT
MAX_VOCAB = 27  # '.' and a-z: the corpus reader keeps nothing else
BATCH_BLOCK = 1000  # steps of batch indices drawn at once (namegen.data.RandomBatches.BLOCK)
EVAL_SHARE = 0.1  # the val (or test) split's share of the examples, evaluated in one pass
# floats held per read character while a corpus is read: the text, its lines and the cleaned words (Python str)
READ_BYTES_PER_BYTE = 24


def memory_bytes() -> int:
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def gib(n: float) -> str:
    for unit, size in (("TiB", 2**40), ("GiB", 2**30)):
        if n >= size / 2:
            return f"{n / size:,.1f} {unit}"
    return f"{n / 2**20:.0f} MiB"


def mlp_parameters(m: dict[str, Any], vocab: int) -> int:
    """makemore's MLP: embedding, `depth` Linear layers (no bias before a norm), each norm's gain and shift."""
    widths = [m["block_size"] * m["n_embd"]] + [m["n_hidden"]] * m["depth"] + [vocab]
    bias = m["norm"] == "none"
    linears = sum(i * o + o * bias for i, o in zip(widths[:-1], widths[1:]))
    norms = 0 if m["norm"] == "none" else 2 * (m["n_hidden"] * m["depth"] + vocab)
    return vocab * m["n_embd"] + linears + norms


def transformer_parameters(m: dict[str, Any], vocab: int) -> int:
    """Token and position embeddings, n_layer blocks of 12 C^2 + 9 C (attention's q, k, v and projection, the 4x
    MLP, their biases) and two norms, a final norm, the head (no bias)."""
    c = m["n_embd"]
    norm = 2 * c if m["norm"] == "layernorm" else 0
    block = 12 * c * c + 9 * c + 2 * norm
    return (vocab + m["block_size"]) * c + m["n_layer"] * block + norm + c * vocab


def mlp_activations(m: dict[str, Any], vocab: int) -> tuple[int, int]:
    """(floats kept for the backward pass, floats alive at once in a no-grad pass) per example."""
    saved = m["block_size"] * m["n_embd"] + 3 * m["n_hidden"] * m["depth"] + 3 * vocab
    return saved, 3 * max(m["block_size"] * m["n_embd"], m["n_hidden"], vocab)


def transformer_activations(m: dict[str, Any], vocab: int) -> tuple[int, int]:
    """Per sequence of block_size tokens: each block keeps 18 C per token and three (n_head, T, T) score maps."""
    t, c, heads = m["block_size"], m["n_embd"], m["n_head"]
    scores = heads * t * t
    saved = m["n_layer"] * (18 * c * t + 3 * scores) + 3 * c * t + 3 * vocab * t
    return saved, 3 * max(4 * c * t, scores, vocab * t)


# arch -> (parameters, activations per example, bytes of buffers: the causal masks, one (T, T) per block)
ARCHS = {
    "mlp": (mlp_parameters, mlp_activations, lambda m: 0),
    "transformer": (transformer_parameters, transformer_activations, lambda m: m["n_layer"] * m["block_size"] ** 2),
}
# which settings make each part large: what a refusal tells the user to make smaller ("the model" is spelled out)
KNOBS = {
    "parameters": "the model",
    "attention masks": "model.block_size",
    "data tensors": "the corpus (data.path) or model.block_size",
    "reading the corpus": "the corpus (data.path)",
    "a batch's activations": "data.batch_size or the model",
    "batch indices": "data.batch_size",
    "a val/test pass": "the corpus (data.path) or the model",
}
SIZES = ("block_size", "n_embd", "n_hidden", "depth", "n_layer", "n_head")  # the model's size settings


@dataclass(frozen=True)
class Estimate:
    parts: dict[str, int]  # what -> bytes
    parameters: int
    model: dict[str, Any]

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    def check(self, what: str, limit: int | None = None) -> None:
        """A one-line ConfigError if the total exceeds this machine's memory, naming the largest part's settings."""
        limit = memory_bytes() if limit is None else limit
        if self.total <= limit:
            return
        big = sorted(self.parts.items(), key=lambda kv: -kv[1])
        shown = ", ".join(f"{k} {gib(v)}" for k, v in big[:3] if v)
        sizes = ", ".join(f"model.{k}={self.model[k]}" for k in SIZES if k in self.model)
        knobs = KNOBS[big[0][0]].replace("the model", f"the model ({sizes}, {self.parameters:,} parameters)")
        raise ConfigError(f"{what} would allocate about {gib(self.total)} ({shown}), more than this machine's "
                          f"{gib(limit)}; make {knobs} smaller")


def model_estimate(model: dict[str, Any], vocab: int = MAX_VOCAB) -> Estimate:
    """The model alone (for sampling a checkpoint): its float32 parameters and buffers."""
    parameters_of, _, buffers_of = ARCHS[model["arch"]]
    n = parameters_of(model, vocab)
    return Estimate({"parameters": FLOAT * n, "attention masks": buffers_of(model)}, n, model)


def run_estimate(model: dict[str, Any], corpus_bytes: int, batch_size: int, processes: int = 1) -> Estimate:
    """A training run: each of `processes` holds the model, the data and a step's activations.

    `model` holds every field of the architecture's config, block_size resolved (for whole names, the longest
    word it may hold + 1). The examples are bounded by the corpus's bytes: a window per character and end of
    word, a row per word (each at least two bytes with its newline) for whole names.
    """
    parameters_of, activations_of, buffers_of = ARCHS[model["arch"]]
    n = parameters_of(model, MAX_VOCAB)
    saved, alive = activations_of(model, MAX_VOCAB)
    t = model["block_size"]
    if model.get("context", "window") == "window":
        examples, per_example = corpus_bytes + 1, (2 * t + 6) * INDEX  # X, Y, and the index tensors building them
    else:
        examples, per_example = corpus_bytes // 2 + 1, (2 * t + 4) * INDEX
    parts = {
        "parameters": BYTES_PER_PARAMETER * n,
        "attention masks": buffers_of(model),
        "reading the corpus": READ_BYTES_PER_BYTE * corpus_bytes,
        "data tensors": examples * per_example,
        "a batch's activations": 2 * FLOAT * saved * batch_size,  # the values and their gradients
        "batch indices": BATCH_BLOCK * batch_size * INDEX,
        "a val/test pass": int(FLOAT * alive * examples * EVAL_SHARE),
    }
    return Estimate({k: v * processes for k, v in parts.items()}, n, model)
