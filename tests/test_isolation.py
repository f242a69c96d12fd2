"""Two runs in one process (tests, a notebook, Hydra's basic launcher) see nothing of each other."""

import csv
import logging
import subprocess
import runpy
import sys
import warnings

import lightning as L
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra

from conftest import REPO, make_cfg, read_events
from namegen.resolvers import SWEPT_KEYS_ENV
from namegen.training import train

TINY = ["callbacks=minimal", "trainer.max_steps=5", "trainer.val_check_interval=5", "trainer.num_sanity_val_steps=0"]
RANK_ZERO = "lightning.pytorch.utilities.rank_zero"  # the logger of Lightning's banners


class Threads(L.Callback):
    """Records torch's thread count while the run trains."""

    seen: list[int] = []

    def on_train_start(self, trainer, pl_module):
        Threads.seen.append(torch.get_num_threads())


def test_the_thread_count_is_the_runs_while_it_trains_and_the_processs_after(tmp_path):
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        Threads.seen = []
        train(make_cfg(tmp_path / "one", *TINY, "threads=1", "+callbacks.threads._target_=test_isolation.Threads"))
        after_one = torch.get_num_threads()
        train(make_cfg(tmp_path / "two", *TINY, "threads=null", "+callbacks.threads._target_=test_isolation.Threads"))
    finally:
        torch.set_num_threads(before)
    assert Threads.seen == [1, 2]  # the second run (threads=null: the process's count) did not inherit the first's
    assert after_one == 2


class Banners(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def test_lightnings_log_noise_is_filtered_during_a_run_and_the_process_keeps_its_logging(tmp_path):
    handler = Banners()
    logger = logging.getLogger(RANK_ZERO)
    logger.addHandler(handler)
    try:
        train(make_cfg(tmp_path, *TINY))
    finally:
        logger.removeHandler(handler)
    assert any("max_steps=5" in line for line in handler.lines)  # Lightning's other lines pass...
    assert not [line for line in handler.lines if line.startswith("GPU available:")]  # ...its banners do not
    # after the run: Lightning logs as it does by itself (its `lightning` logger propagates; its banners pass) ...
    assert logging.getLogger("lightning").propagate is True
    banner = logging.LogRecord(RANK_ZERO, logging.INFO, __file__, 1, "GPU available: False", None, None)
    assert logger.filter(banner)
    # ... and the deprecation warning the run silenced shows again
    silenced = [f for f in warnings.filters if f[1] is not None and f[1].search("isinstance(treespec, LeafSpec)")]
    assert silenced == []


def differing_hparams(run_dir) -> list[str]:
    """The HParams keys a run's events mark as differing between the runs of its sweep."""
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = read_events(run_dir).SummaryMetadata("_hparams_/experiment").plugin_data.content
    return [i.name for i in plugin_data_pb2.HParamsPluginData.FromString(content).experiment.hparam_infos if i.differs]


def test_a_sweep_aborted_in_this_process_does_not_mark_a_later_runs_hparams(tmp_path, monkeypatch):
    """A multirun whose first job cannot even be composed aborts before its end: what it told its jobs about
    its swept keys must not reach a run started afterwards in the same process."""
    monkeypatch.setenv(SWEPT_KEYS_ENV, "")  # recorded as absent, so that what the sweep leaves is gone afterwards
    monkeypatch.delenv(SWEPT_KEYS_ENV)
    monkeypatch.setattr(sys, "argv", ["train.py", "-m", "hydra/launcher=basic", "init=xavier,kaiming",
                                      f"hydra.sweep.dir={tmp_path / 'sweep'}"])
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level  # Hydra configures the process's logging: put back afterwards
    try:
        with pytest.raises(SystemExit):
            runpy.run_path(str(REPO / "train.py"), run_name="__main__")  # `python train.py ...`, in this process
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        GlobalHydra.instance().clear()
    assert (tmp_path / "sweep" / "multirun.yaml").is_file()  # the sweep did start

    train(make_cfg(tmp_path / "run", *TINY))
    assert differing_hparams(tmp_path / "run") == []


USER_CALLBACKS = '''
import lightning as L


class Count(L.Callback):  # the user's own callbacks module, named as namegen's folder is
    steps = 0

    def on_train_batch_end(self, *args):
        Count.steps += 1
'''

USER_TRAIN = '''
import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger

from callbacks import Count
from namegen.callbacks import Activations, Diagnostics, Gradients


class Net(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


torch.manual_seed(0)
data = torch.utils.data.TensorDataset(torch.randn(64, 4), torch.randn(64, 1))
logger = CSVLogger(".", name="logs", version=0)
trainer = L.Trainer(max_steps=3, logger=logger, enable_progress_bar=False, enable_checkpointing=False,
                    enable_model_summary=False,
                    callbacks=[Count(), Diagnostics(every_n_steps=1, histogram_every_n_steps=None,
                                                    figures_every_n_steps=None, probes=[Activations(), Gradients()])])
trainer.fit(Net(), torch.utils.data.DataLoader(data, batch_size=16))
print("steps", Count.steps)
'''


def test_a_project_with_its_own_callbacks_module_imports_namegens(tmp_path):
    """namegen's callbacks are installed as namegen.callbacks: a user's callbacks.py beside the training script
    (first on sys.path) is theirs, and namegen's still import and record."""
    (tmp_path / "callbacks.py").write_text(USER_CALLBACKS)
    (tmp_path / "train_user.py").write_text(USER_TRAIN)
    done = subprocess.run([sys.executable, "train_user.py"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "steps 3" in done.stdout
    with open(tmp_path / "logs" / "version_0" / "metrics.csv") as f:
        header = next(csv.reader(f))
    assert "act/00.net.1/saturation" in header and "grad/00.net.1/std" in header
