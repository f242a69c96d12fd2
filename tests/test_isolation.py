"""Two runs in one process (tests, a notebook, Hydra's basic launcher) see nothing of each other."""

import logging
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
