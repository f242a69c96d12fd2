"""Drawing names from a trained model, one character at a time."""

from __future__ import annotations

from typing import Iterator

import torch

from namegen.vocab import Vocab

CHUNK = 64  # names drawn side by side; each chunk has its own generator, so name i never depends on n


@torch.no_grad()
def sample_names(
    model: torch.nn.Module, vocab: Vocab, n: int = 10, seed: int = 0, temperature: float = 1.0, max_len: int = 50
) -> Iterator[str]:
    """Yield `n` names, each grown from '.' until the model emits '.' (or `max_len` characters).

    Names are drawn CHUNK at a time, chunk c from a generator seeded by (seed, c), each
    step by inverse-CDF from CHUNK uniform draws, so the i-th name for a seed is the same
    whatever `n` is, and names stream out while the rest are drawn. The model reads at
    most its `block_size` last characters; its last position's logits give the next one.
    """
    if n < 1:
        raise ValueError(f"n={n} must be at least 1")
    if not temperature > 0:
        raise ValueError(f"temperature={temperature} must be > 0 (1.0 samples the model as trained)")
    model.eval()
    block_size = model.cfg.block_size
    for c, start in enumerate(range(0, n, CHUNK)):
        g = torch.Generator().manual_seed((seed * 1_000_003 + c) % 2**64)  # any seed up to 2**63 - 1: 64 bits
        uniforms = torch.rand(max_len, CHUNK, generator=g)  # the whole chunk's draws, whatever its size
        rows = min(CHUNK, n - start)
        idx = torch.zeros(rows, 1, dtype=torch.long)  # (rows, 1): '.' starts every name
        done = torch.zeros(rows, dtype=torch.bool)
        for t in range(max_len):
            logits = model(idx[:, -block_size:])
            logits = logits.reshape(rows, -1, logits.size(-1))[:, -1].double()  # (rows, V) at the last position
            # shifted so the largest is 0 before dividing: a tiny temperature gives -inf, never inf - inf = nan
            probs = torch.softmax((logits - logits.amax(-1, keepdim=True)) / temperature, dim=-1)
            cdf = probs.cumsum(-1)
            u = uniforms[t, :rows, None].double() * cdf[:, -1:]
            ix = torch.searchsorted(cdf, u).squeeze(1).clamp_(max=probs.size(-1) - 1)  # (rows,)
            ix[done] = 0
            idx = torch.cat([idx, ix[:, None]], dim=1)
            done |= ix == 0
            if done.all():
                break
        for row in idx[:, 1:].tolist():
            yield vocab.decode(row[: row.index(0)] if 0 in row else row)
