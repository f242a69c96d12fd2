"""NameGen as an accelerator or several processes would run it, with test doubles on the CPU."""

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


class OnAnAccelerator(NameGen):
    """Reads the loss as on a GPU (where a read waits for the device) and records each step it reads on."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.reads = []

    def reads_loss_at(self, step):
        return self.lightning_logs_at(step)

    def read_losses(self, before_update=False):
        if self.unread:
            self.reads.append(self.global_step)
        super().read_losses(before_update)


# the scheduler multiplies the lr by 1e30 after step 60: the loss is finite until then and explodes right after
BLOWUP = ["callbacks=minimal", "trainer.max_steps=120", "trainer.val_check_interval=20", "optim.scheduler.milestones=[60]",
          "optim.scheduler.gamma=1e30", "trainer.num_sanity_val_steps=0"]


@pytest.mark.parametrize("log_every,reads", [
    (10, [9, 19, 29, 39, 49, 59, 69]),  # logging steps; the validations after them find nothing unread
    (50, [20, 40, 49, 60, 80]),  # the validations at 20, 40, 60, 80 and the logging step 49
])
def test_on_an_accelerator_divergence_is_read_on_logging_steps_and_names_the_first_bad_step(tmp_path, log_every,
                                                                                            reads):
    """The loss is read only on Lightning's logging steps and before each validation and checkpoint; the run
    stops at the first read after the loss went bad, naming that step and the step it was read at."""
    exact = train(make_cfg(tmp_path / "cpu", *BLOWUP, f"trainer.log_every_n_steps={log_every}"))
    bad = exact["diverged_step"]  # read on every step on the CPU: the step the loss went bad, before its update
    assert exact["status"] == "diverged" and 60 <= bad < 69 and exact["steps"] == bad
    assert exact["diverged_layer"].startswith("model.hidden.")

    result, module = run(OnAnAccelerator, make_cfg(tmp_path / "gpu", *BLOWUP, f"trainer.log_every_n_steps={log_every}"))
    assert module.reads == reads
    assert result["status"] == "diverged" and result["diverged_step"] == bad and result["steps"] == reads[-1]
    assert f"at step {bad} (read at step {reads[-1]}" in result["error"]
    assert result["diverged_layer"] is None  # every layer is non-finite by then: none can be named as the first
    last = torch.load(tmp_path / "gpu" / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 60 and all(torch.isfinite(v).all() for v in last["state_dict"].values())
