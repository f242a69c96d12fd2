"""Drawing names from a trained model, one character at a time."""

from __future__ import annotations

import torch

from namegen.data import Vocab
from namegen.model import MLP


@torch.no_grad()
def sample_names(
    model: MLP, vocab: Vocab, n: int = 10, seed: int = 0, temperature: float = 1.0, max_len: int = 50
) -> list[str]:
    """`n` names, each grown from an all-'.' context until the model emits '.' (or `max_len` chars).

    The n names are drawn side by side as one batch; the same seed gives the same names.
    """
    if n < 1:
        raise ValueError(f"n={n} must be at least 1")
    if not temperature > 0:
        raise ValueError(f"temperature={temperature} must be > 0 (1.0 samples the model as trained)")
    model.eval()
    g = torch.Generator().manual_seed(seed)
    context = torch.zeros(n, model.cfg.block_size, dtype=torch.long)  # (n, T)
    out = torch.zeros(n, max_len, dtype=torch.long)
    done = torch.zeros(n, dtype=torch.bool)
    for t in range(max_len):
        probs = torch.softmax(model(context) / temperature, dim=-1)  # (n, V)
        ix = torch.multinomial(probs, 1, generator=g).squeeze(1)  # (n,)
        ix[done] = 0
        out[:, t] = ix
        done |= ix == 0
        if done.all():
            break
        context = torch.cat([context[:, 1:], ix[:, None]], dim=1)
    names = []
    for row in out.tolist():
        ids = row[: row.index(0)] if 0 in row else row
        names.append(vocab.decode(ids))
    return names
