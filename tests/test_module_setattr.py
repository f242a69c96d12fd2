"""NameGen's __setattr__ fast path for plain values behaves exactly as nn.Module.__setattr__."""

import lightning as L
import torch
import torch.nn as nn

from namegen.module import NameGen

ASSIGNMENTS = [  # in order, on one module: each outcome compared with a LightningModule's own
    ("plain", 1), ("plain", "hook name"), ("plain", None), ("plain", 2.5), ("plain", True),
    ("w", nn.Parameter(torch.ones(2))), ("w", 3), ("w", None), ("w", nn.Parameter(torch.zeros(2))),
    ("plain", nn.Parameter(torch.full((2,), 7.0))), ("plain", 4), ("plain", None),
    ("sub", nn.Linear(2, 2)), ("sub", "not a module"), ("sub", None),
    ("buf", torch.arange(3.0)), ("buf", 5), ("buf", None), ("buf", torch.ones(3)),
    ("other", torch.ones(1)), ("other", 6), ("_current_fx_name", "training_step"), ("_current_fx_name", None),
]


def outcomes(module: nn.Module) -> list:
    module.register_buffer("buf", torch.zeros(3))
    seen = []
    for name, value in ASSIGNMENTS:
        try:
            setattr(module, name, value)
            error = None
        except Exception as e:  # nn.Module refuses a plain value for a parameter, buffer or submodule name
            error = (type(e).__name__, str(e))
        got = getattr(module, name, "<missing>")
        seen.append((name, error, got if not isinstance(got, (torch.Tensor, nn.Module)) else repr(got),
                     sorted(n for n, _ in module.named_parameters(recurse=False)),
                     sorted(n for n, _ in module.named_buffers(recurse=False)),
                     sorted(n for n, _ in module.named_children()), name in vars(module)))
    return seen


def test_fast_path_keeps_nn_module_semantics():
    reference = outcomes(L.LightningModule())
    fast = outcomes(NameGen({"arch": "mlp", "vocab_size": 27, "block_size": 3, "n_hidden": 4, "depth": 1}, list(".ab")))
    # NameGen has its model besides what the test registers
    strip = lambda rows: [(*row[:3], *[[n for n in col if n != "model"] for col in row[3:6]], row[6]) for row in rows]  # noqa: E731
    assert strip(fast) == strip(reference)
    # the cases that matter, checked outright: nn.Module refused a plain value for a parameter's name ...
    assert reference[6][1][0] == "TypeError" and "cannot assign 'int' as parameter 'w'" in reference[6][1][1]
    # ... a plain attribute became a registered parameter, and then refused a plain value
    assert reference[9][3] == ["plain", "w"] and reference[10][1][0] == "TypeError"
