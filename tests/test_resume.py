"""A run killed with SIGKILL and restarted with resume=true ends exactly where an uninterrupted run ends."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import lightning as L
import torch

from pathlib import Path

from conftest import REPO, make_cfg, read_events, run_train
from namegen.training import train

COMMAND = ["callbacks=minimal", "trainer.max_steps=400", "trainer.val_check_interval=50", "trainer.log_every_n_steps=10"]
# the run to kill trains slowly from its checkpoint at step 200 on, so the test kills it mid-run, between that
# checkpoint and the scheduler's decay at 300 (3/4 of 400), whatever the machine's load; its resume trains at speed
SLOW = ["+callbacks.slow._target_=test_resume.Slow", "+callbacks.slow.after=200"]
TESTS_ON_PATH = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO / "tests"), os.environ.get("PYTHONPATH"))
                                                             if p)}


class Slow(L.Callback):
    """Sleeps a little after each optimizer step from step `after` on: a run to be killed, still running."""

    def __init__(self, after: int, seconds: float = 0.05):
        self.after, self.seconds = after, seconds

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step > self.after:
            time.sleep(self.seconds)


def start(run_dir, *extra):
    return subprocess.Popen([sys.executable, str(REPO / "train.py"), *COMMAND, *extra, f"hydra.run.dir={run_dir}"],
                            cwd=REPO, env=TESTS_ON_PATH, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def final_state(run_dir):
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    return ckpt["global_step"], ckpt["state_dict"], json.loads((run_dir / "result.json").read_text())


def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path):
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    reference = start(whole)
    proc = start(killed, *SLOW)
    last = killed / "checkpoints" / "last.ckpt"
    deadline = time.time() + 240
    step = 0
    while step < 200:
        assert time.time() < deadline and proc.poll() is None, "the run ended before it could be killed"
        if last.exists():
            # atomic writes: whenever last.ckpt exists it loads whole, even while the run rewrites it
            step = torch.load(last, weights_only=True)["global_step"]
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "result.json").exists()  # it really died mid-run

    resumed = start(killed, "resume=true")
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read().decode()[-3000:]
    assert reference.wait(timeout=300) == 0, reference.stderr.read().decode()[-3000:]

    step_a, weights_a, result_a = final_state(killed)
    step_b, weights_b, result_b = final_state(whole)
    assert step_a == step_b == 400
    assert weights_a.keys() == weights_b.keys()
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    for key in ("init_loss", "train_loss", "val_loss", "best_val_loss", "test_loss"):
        assert isinstance(result_a[key], float) and result_a[key] == result_b[key], key
    # the resumed run logged the same validation losses at the same steps as the uninterrupted one
    curve = lambda d, tag: {e.step: e.value for e in read_events(d).Scalars(tag)}  # noqa: E731
    assert curve(killed, "val/loss") == curve(whole, "val/loss")
    # the scheduler was restored: the decay at step 300 (3/4 of 400) happened in the resumed part, on time
    lr = curve(killed, "lr-SGD")
    assert lr == curve(whole, "lr-SGD") and lr[299] == pytest.approx(0.1) and lr[309] == pytest.approx(0.01)


def test_same_config_and_seed_give_bit_identical_losses(tmp_path):
    losses = []
    for name in ("a", "b"):
        train(make_cfg(tmp_path / name, "callbacks=default", "trainer.max_steps=300", "trainer.val_check_interval=100",
                       "trainer.log_every_n_steps=10", "trainer.num_sanity_val_steps=0"))
        events = read_events(tmp_path / name)
        losses.append({tag: [(e.step, e.value) for e in events.Scalars(tag)]
                       for tag in ("train/loss", "val/loss", "test/loss", "init/loss")})
    assert len(losses[0]["train/loss"]) == 31  # step 0, then every 10 steps
    assert losses[0] == losses[1]
    other = make_cfg(tmp_path / "c", "callbacks=minimal", "seed=7", "trainer.max_steps=300",
                     "trainer.val_check_interval=100", "trainer.log_every_n_steps=10")
    train(other)
    assert [v for _, v in losses[0]["train/loss"]] != [e.value for e in read_events(tmp_path / "c").Scalars("train/loss")]


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


SWEEP = ["-m", "init=naive,kaiming", "hydra.launcher.n_jobs=2", *COMMAND]


def test_sigkill_of_a_sweep_takes_its_workers_down_and_the_resumed_sweep_matches(tmp_path):
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    reference = subprocess.Popen([sys.executable, str(REPO / "train.py"), *SWEEP, f"hydra.sweep.dir={whole}"],
                                 cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # meanwhile
    proc = subprocess.Popen([sys.executable, str(REPO / "train.py"), *SWEEP, *SLOW, f"hydra.sweep.dir={killed}"],
                            cwd=REPO, env=TESTS_ON_PATH, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    lasts = [killed / run / "checkpoints" / "last.ckpt" for run in ("init=naive", "init=kaiming")]
    while not all(p.exists() for p in lasts):
        assert time.time() < deadline and proc.poll() is None, "the sweep ended before it could be killed"
        time.sleep(0.1)
    workers = children(proc.pid)
    assert workers, "the joblib workers were not found"
    record = (killed / "multirun.yaml").read_text()
    os.kill(proc.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    proc.wait()
    while [w for w in workers if alive(w)] and time.monotonic() - killed_at < 5:
        time.sleep(0.02)
    # gone within the 5 s waited above (they look for their parent every 0.1 s; how fast a dying process is reaped
    # is the machine's load, not a promise a unit test can time)
    assert not [w for w in workers if alive(w)], "sweep workers outlived the sweep's main process"
    assert not (killed / "init=naive" / "result.json").exists()

    resumed = run_train(*SWEEP, "resume=true", f"hydra.sweep.dir={killed}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (killed / "multirun.yaml").read_text() == record  # the sweep's record, as it was started
    assert reference.wait(timeout=300) == 0, reference.stderr.read().decode()[-3000:]
    for run in ("init=naive", "init=kaiming"):
        a, b = (json.loads((d / run / "result.json").read_text()) for d in (killed, whole))
        assert a["steps"] == b["steps"] == 400
        assert a["val_loss"] == b["val_loss"] and a["test_loss"] == b["test_loss"], run


class Interrupt(L.Callback):
    """Ends a training abruptly before step `at` (as a crash or a kill would), after its checkpoints so far."""

    def __init__(self, at: int):
        self.at = at

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.at:
            raise RuntimeError(f"interrupted at step {self.at}")


def test_resume_with_gradient_accumulation_draws_the_batches_of_an_uninterrupted_run(tmp_path):
    """accumulate_grad_batches=2: each optimizer step takes two batches of the stream, so a resume at step s
    must continue at batch 2s, not s."""
    command = ["callbacks=minimal", "~logger", "~callbacks.lr_monitor", "+trainer.accumulate_grad_batches=2",
               "trainer.max_steps=30", "trainer.val_check_interval=20", "trainer.num_sanity_val_steps=0"]
    whole = train(make_cfg(tmp_path / "whole", *command))
    with pytest.raises(RuntimeError, match="interrupted at step 15"):
        train(make_cfg(tmp_path / "killed", *command, "+callbacks.kill._target_=test_resume.Interrupt",
                       "+callbacks.kill.at=15"))
    # validations every 20 batches = every 10 optimizer steps: last.ckpt holds step 10, mid-run
    assert torch.load(tmp_path / "killed" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 10
    resumed = train(make_cfg(tmp_path / "killed", *command, "resume=true"))
    step_a, weights_a, _ = final_state(tmp_path / "killed")
    step_b, weights_b, _ = final_state(tmp_path / "whole")
    assert step_a == step_b == 30
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_b)
    for key in ("train_loss", "val_loss", "test_loss"):
        assert isinstance(whole[key], float) and resumed[key] == whole[key], key


def other_filesystem(path: Path) -> Path | None:
    """A folder on another filesystem than `path` (the tmpfs /dev/shm), or None where there is none."""
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) and shm.stat().st_dev != path.stat().st_dev else None


@pytest.mark.parametrize("io, whole", [("lightning", False), ("namegen", True)])
def test_a_save_killed_mid_write_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch, io, whole):
    """With the system's temp folder on another filesystem, Lightning's save (an fsspec transaction) copies its
    temporary file into last.ckpt; a kill during that copy leaves it truncated. namegen's renames a file written
    next to it: the previous checkpoint stays whole."""
    import shutil
    import tempfile

    from lightning.pytorch.plugins.io import TorchCheckpointIO

    from namegen.checkpoint_io import AtomicCheckpointIO

    elsewhere = other_filesystem(tmp_path)
    if elsewhere is None:
        pytest.skip("no second filesystem to put the temp folder on")
    scratch = Path(tempfile.mkdtemp(dir=elsewhere))
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    last = tmp_path / "last.ckpt"
    saver = AtomicCheckpointIO() if io == "namegen" else TorchCheckpointIO()
    saver.save_checkpoint({"step": 1, "weights": torch.ones(1000)}, last)

    def killed_copy(src, dst, *args, **kwargs):  # half the bytes reach dst, then the process is gone
        data = Path(src).read_bytes()
        Path(dst).write_bytes(data[: len(data) // 2])
        raise KeyboardInterrupt

    monkeypatch.setattr(shutil, "copyfile", killed_copy)
    try:
        with pytest.raises(KeyboardInterrupt):
            saver.save_checkpoint({"step": 2, "weights": torch.zeros(1000)}, last)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if whole:
        assert torch.load(last, weights_only=True)["step"] == 1
    else:
        with pytest.raises(Exception):
            torch.load(last, weights_only=True)


def test_a_resumed_runs_diagnosis_reads_its_earlier_steps_from_its_files(tmp_path):
    """The diagnosis at the end of a resumed run reads the steps before the resume from the run's files (here
    CSVLogger's, two versions) and the rest from memory: it says what an uninterrupted run's says."""
    command = ["logger=csv", "init=naive", "norm=none", "callbacks.diagnostics.every_n_steps=10",
               "callbacks.diagnostics.histogram_every_n_steps=null", "~callbacks.diagnostics.probes.figures",
               "trainer.max_steps=40", "trainer.val_check_interval=20", "trainer.num_sanity_val_steps=0",
               "trainer.log_every_n_steps=10"]
    whole = train(make_cfg(tmp_path / "whole", *command))
    with pytest.raises(RuntimeError, match="interrupted at step 30"):
        train(make_cfg(tmp_path / "killed", *command, "+callbacks.kill._target_=test_resume.Interrupt",
                       "+callbacks.kill.at=30"))
    resumed = train(make_cfg(tmp_path / "killed", *command, "resume=true"))
    assert sorted(p.parent.name for p in (tmp_path / "killed").rglob("metrics.csv")) == ["version_0", "version_1"]
    diagnosis = {name: json.loads((tmp_path / name / "diagnosis.json").read_text()) for name in ("whole", "killed")}
    assert diagnosis["killed"] == diagnosis["whole"] and len(diagnosis["whole"]["checked"]) >= 5
    # the saturation at step 0 is only in the first process's file
    assert resumed["init_saturation"] == whole["init_saturation"] > 0
