"""NameGen as an accelerator would run it, with a test double on the CPU."""

import math
from pathlib import Path

import lightning as L
import pytest
import torch

from conftest import make_cfg
from namegen.module import NameGen
from namegen.training import build, fit_and_record, train


def run(module_class: type, cfg) -> tuple[dict, NameGen]:
    """train(cfg) with `module_class` in NameGen's place, starting from the very weights NameGen would have."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule, module, trainer = build(cfg)
    double = module_class(**module.hparams)
    double.load_state_dict(module.state_dict())
    return fit_and_record(cfg, Path(cfg.run_dir), datamodule, double, trainer), double


class TransferChecked(NameGen):
    """An accelerator's view of batches: the model accepts only tensors that came out of transfer_batch_to_device,
    as a GPU model accepts only tensors on its device."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.moved = {}  # id -> tensor (kept alive, so an id is never reused)
        self.transfers = []  # the batch size of each transfer, in order
        self.model.register_forward_pre_hook(self.only_moved)

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        batch = [t.clone() for t in super().transfer_batch_to_device(batch, device, dataloader_idx)]
        self.moved.update((id(t), t) for t in batch)
        self.transfers.append(len(batch[1]))
        return batch

    def only_moved(self, module, args):
        if id(args[0]) not in self.moved:
            raise RuntimeError("a batch reached the model without going through transfer_batch_to_device")


@pytest.mark.filterwarnings("ignore:You have overridden `transfer_batch_to_device`")  # the double's point
def test_the_initial_loss_pass_moves_its_batch_as_lightning_moves_every_batch(tmp_path):
    cfg = make_cfg(tmp_path, "callbacks=minimal", "~logger", "~callbacks.lr_monitor", "trainer.max_steps=3",
                   "trainer.num_sanity_val_steps=0")
    result, module = run(TransferChecked, cfg)
    assert result["status"] == "ok"
    val_size = len(module.trainer.datamodule.y["val"])
    # first the whole validation split for init/loss at step 0, then 3 training batches, the final validation, the test
    assert module.transfers[:4] == [val_size, 32, 32, 32] and len(module.transfers) == 6
    # kaiming's first logits are near zero: the first loss is near the uniform baseline log 27 (reference fact)
    assert result["init_loss"] == pytest.approx(math.log(27), abs=0.15)
