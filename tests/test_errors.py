"""Bad input gets one clear line and a non-zero exit; a crash loses nothing; a checkpoint cannot run code."""

import logging
import os
import shutil

import pytest
import torch

from conftest import FAST, make_cfg, namegen, run_train
from namegen.checkpoint import CheckpointError, load_checkpoint
from namegen.sample import sample_names
from namegen.data import CharDataModule, DataError, load_words
from namegen.errors import ConfigError, UserError
from namegen.training import train, validate


def write(tmp_path, text, name="words.txt", newline=None):
    path = tmp_path / name
    with open(path, "w", encoding="utf-8", newline=newline) as f:
        f.write(text)
    return str(path)


# -- data ---------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="data.path='.*nope.txt': no such file or folder; give a file of one word"):
        load_words("file", str(tmp_path / "nope.txt"))


@pytest.mark.parametrize("text", ["", "\n\n   \n\t\n", "123\n---\n"])
def test_empty_blank_or_unusable_file(tmp_path, text):
    with pytest.raises(DataError, match="no usable words"):
        load_words("file", write(tmp_path, text))


def test_non_az_policy_lowercases_strips_accents_and_drops_the_rest(tmp_path, caplog):
    path = write(tmp_path, "Zoé\nANNA\nmary-jane\nbob2\n  ed  \n")
    with caplog.at_level(logging.WARNING):
        assert load_words("file", path) == ["zoe", "anna", "ed"]
    assert "stripped accents from 1 words, dropped 2 words with characters outside a-z" in caplog.text
    assert "'mary-jane'" in caplog.text


def test_crlf_line_endings(tmp_path):
    assert load_words("file", write(tmp_path, "emma\r\nava\r\n", newline="")) == ["emma", "ava"]


def test_duplicates_are_kept_as_frequency(tmp_path):
    assert load_words("file", write(tmp_path, "emma\nemma\nava\n")) == ["emma", "emma", "ava"]


def test_absurdly_long_word(tmp_path):
    with pytest.raises(DataError, match=r"words.txt:2: a word of 60 characters \(limit data.max_word_len=50\)"):
        load_words("file", write(tmp_path, "emma\n" + "a" * 60 + "\n"))


def test_corpus_too_small_to_split(tmp_path):
    with pytest.raises(DataError, match="5 words are too few for a train/val/test split"):
        CharDataModule(source="file", path=write(tmp_path, "a\nb\nc\nd\ne\n")).prepare()


def test_not_utf8(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("zoé\n".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8 text.*save it as UTF-8"):
        load_words("file", str(path))


# -- config ----------------------------------------------------------------------------


@pytest.mark.parametrize("override,message", [
    ("optim.optimizer.lr=0", "optim.optimizer.lr=0 must be a finite number > 0"),
    ("optim.optimizer.lr=-0.1", "optim.optimizer.lr=-0.1 must be a finite number > 0"),
    ("optim.optimizer.lr=inf", "optim.optimizer.lr=inf must be a finite number > 0"),
    ("optim.optimizer.lr=nan", "optim.optimizer.lr=nan must be a finite number > 0"),
    ("optim.optimizer.momentum=-1", r"optim.optimizer: Invalid momentum value: -1"),
    ("model.depth=0", "model.depth=0 must be a positive integer"),
    ("model.n_hidden=0", "model.n_hidden=0 must be a positive integer"),
    ("model.block_size=0", "block_size=0 must be a positive integer"),
    ("data.batch_size=0", "batch_size=0 must be a positive integer"),
    ("trainer.max_steps=0", "trainer.max_steps=0 must be a positive integer"),
    ("threads=0", "threads=0 must be a positive integer"),
    ("threads=1000", r"threads=1000 must be a positive integer, at most this machine's \d+ cores"),
    ("seed=-1", r"seed=-1 must be an integer in 0 .. 2\*\*32 - 1"),
    ("seed=abc", r"seed='abc' must be an integer in 0 .. 2\*\*32 - 1"),
    ("init.output_scale=1e30", r"init.output_scale=1e\+30 must be in \(0, 10\]"),
    ("model.n_hidden=1000000", r"the run would allocate about .* TiB \(parameters .*\), more than this machine's .*; "
                               r"make the model \(.*model.n_hidden=1000000.*\) smaller"),
    ("init.scheme=xavier", r"unknown init.scheme .xavier.; choose one of naive, kaiming, pytorch"),
    ("~callbacks.lr_monitor", None),  # not a mistake: the control row
])
def test_bad_numbers(tmp_path, override, message):
    if message is None:
        validate(make_cfg(tmp_path, *FAST, override))
        return
    with pytest.raises((ConfigError, DataError), match=message):
        train(make_cfg(tmp_path / "run", *FAST, override))
    assert not (tmp_path / "run").exists()  # refused before the run folder was made


def test_a_bad_callback_argument_names_its_config_key(tmp_path):
    with pytest.raises(ConfigError, match="callbacks.diagnostics: .*every_n_steps"):
        train(make_cfg(tmp_path, *FAST, "callbacks.diagnostics.every_n_steps=0"))


def test_a_user_mistake_is_one_line_exit_2_before_lightning_loads_and_leaves_no_folder(tmp_path):
    result = run_train("data=file", f"data.path={tmp_path / 'missing.txt'}", f"hydra.run.dir={tmp_path / 'run'}",
                       env={"PYTHONPROFILEIMPORTTIME": "1"})  # python lists every module it imports on stderr
    assert result.returncode == 2
    assert "| lightning" not in result.stderr and "| torch" in result.stderr  # the check ran, Lightning never loaded
    result.stderr = "\n".join(line for line in result.stderr.splitlines() if not line.startswith("import time:"))
    missing = tmp_path / "missing.txt"
    assert result.stderr.strip().splitlines()[-1] == (f"namegen: error: data.path='{missing}': no such file or folder; "
                                                      "give a file of one word per line")
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()  # Hydra's stub folder is removed: a refused command writes nothing


@pytest.mark.parametrize("group,choice", [("init", "xavier"), ("norm", "groupnorm")])
def test_unknown_choice_lists_the_valid_ones(tmp_path, group, choice):
    result = run_train(f"{group}={choice}", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 1 and f"Could not find '{group}/{choice}'" in result.stderr  # Hydra's own exit code
    assert "Available options" in result.stderr and "Traceback" not in result.stderr


def test_resume_true_in_a_single_run_asks_for_the_folder(tmp_path):
    # run from tmp_path: the new timestamped folder Hydra makes lands there, not in the repo
    result = run_train("resume=true", cwd=tmp_path, timeout=120)
    assert result.returncode == 2 and "use resume=outputs/runs/<time>" in result.stderr
    assert not list(tmp_path.glob("outputs/runs/*"))


# continue trained_run (300 steps) in a copy of its folder, to step 400
RESUME = ["resume=true", "callbacks=minimal", "trainer.max_steps=400", "trainer.val_check_interval=100",
          "trainer.num_sanity_val_steps=0"]


@pytest.mark.parametrize("override,message", [
    ("model.depth=3", "model.depth=5, not 3"),
    ("optim.optimizer.lr=20", "optim.optimizer.lr=0.1, not 20"),  # the checkpoint's would be used: refused instead
])
def test_resume_with_another_config_is_refused_and_the_record_kept(trained_run, tmp_path, override, message):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    record = (run / ".hydra" / "config.yaml").read_text()
    with pytest.raises(ConfigError, match=message):
        train(make_cfg(run, *RESUME, override))
    assert (run / ".hydra" / "config.yaml").read_text() == record


def test_resume_into_a_folder_that_holds_no_run_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="is not a namegen run folder"):
        train(make_cfg(tmp_path, *RESUME[1:], f"resume={tmp_path}"))
    assert not list(tmp_path.iterdir())
    result = run_train(*RESUME, f"hydra.run.dir={tmp_path / 'typo'}", timeout=120)  # resume=true, a single run
    assert result.returncode == 2 and "is not a namegen run folder" in result.stderr
    assert not (tmp_path / "typo").exists()


def test_resuming_a_finished_run_keeps_its_result(trained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    before = (run / "result.json").read_text()
    train(make_cfg(run, *RESUME[:1], "callbacks=minimal", "trainer.max_steps=300", "trainer.val_check_interval=100",
                   "trainer.num_sanity_val_steps=0"))
    assert (run / "result.json").read_text() == before


def test_an_older_checkpoint_format_samples_but_does_not_resume(trained_run, tmp_path):
    shutil.copytree(trained_run, tmp_path, dirs_exist_ok=True)
    for path in (tmp_path / "checkpoints").glob("*.ckpt"):
        ckpt = torch.load(path, weights_only=True)
        hp = ckpt.pop("hyper_parameters")  # format 2 kept the model and vocabulary in its own section
        model = {k: v for k, v in hp["model"].items() if k not in ("arch", "context")}
        ckpt["namegen"] = {"version": 2, "model": model, "vocab": hp["vocab"], "init_loss": None}
        torch.save(ckpt, path)
    with pytest.raises(ConfigError, match=r"older namegen \(checkpoint format 2\).*start a new run"):
        train(make_cfg(tmp_path, *RESUME, "trainer.max_steps=300"))
    assert len(list(sample_names(load_checkpoint(tmp_path).model, load_checkpoint(tmp_path).vocab, 3))) == 3


def test_report_on_a_missing_folder(tmp_path, cli):
    code, _, err = cli("report", str(tmp_path / "nope"))
    assert code == 2 and "no such folder" in err


# -- divergence ------------------------------------------------------------------------


def test_divergence_stops_at_the_step_keeps_logs_and_the_last_good_checkpoint(tmp_path):
    # the scheduler multiplies the lr by 1e30 at step 60: the loss is finite until then and explodes right after
    cfg = make_cfg(tmp_path, "callbacks=minimal", "trainer.max_steps=120", "trainer.val_check_interval=20",
                   "optim.scheduler.milestones=[60]", "optim.scheduler.gamma=1e30", "trainer.log_every_n_steps=10")
    result = train(cfg)
    assert result["status"] == "diverged"
    step = result["diverged_step"]
    assert 60 <= step < 70 and result["steps"] == step and f"at step {step}" in result["error"]
    assert result["diverged_layer"].startswith("model.hidden.")
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 60 and all(torch.isfinite(v).all() for v in last["state_dict"].values())
    assert list(tmp_path.glob("events.out.tfevents.*")) and (tmp_path / "result.json").is_file()


def test_divergence_report_names_each_layer(tmp_path, caplog):
    cfg = make_cfg(tmp_path, "callbacks=minimal", "optim.optimizer.lr=1e30", "model.depth=3", *FAST)
    with caplog.at_level(logging.ERROR):
        assert train(cfg)["status"] == "diverged"
    assert all(f"model.hidden.{i}.act: mean" in caplog.text for i in range(3)) and "hidden.3" not in caplog.text
    assert "saturation" in caplog.text and "dead" in caplog.text


# -- checkpoints --------------------------------------------------------------------------


def sample(*args):
    return namegen("sample", *args)


@pytest.fixture
def cli(capsys):
    """`namegen <args>` in-process: (exit code, stdout, stderr)."""
    from namegen.cli import main

    def run(*args):
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "notes.ckpt"
    path.write_text("just some text\n")
    result = sample(str(path))
    assert result.returncode == 2 and "not a readable checkpoint" in result.stderr and "Traceback" not in result.stderr


def test_truncated_checkpoint(trained_run, tmp_path):
    data = (trained_run / "checkpoints" / "best.ckpt").read_bytes()
    (tmp_path / "cut.ckpt").write_bytes(data[: len(data) // 2])
    result = sample(str(tmp_path / "cut.ckpt"))
    assert result.returncode == 2 and "truncated or corrupt" in result.stderr and "Traceback" not in result.stderr


def test_checkpoint_from_another_program(tmp_path):
    torch.save({"state_dict": {"w": torch.zeros(2)}, "epoch": 3}, tmp_path / "other.ckpt")
    result = sample(str(tmp_path / "other.ckpt"))
    assert result.returncode == 2 and "not a namegen checkpoint" in result.stderr


def test_run_folder_without_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="has no checkpoints/best.ckpt"):
        load_checkpoint(tmp_path)


class Payload:
    """Unpickling this runs `touch marker`."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_malicious_checkpoint_is_refused_and_runs_nothing(tmp_path, trained_run):
    marker = tmp_path / "pwned"
    ckpt = torch.load(trained_run / "checkpoints" / "best.ckpt", weights_only=True)
    ckpt["namegen"]["evil"] = Payload(marker)
    torch.save(ckpt, tmp_path / "evil.ckpt")
    # the payload works: a full unpickle runs it
    torch.load(tmp_path / "evil.ckpt", weights_only=False)
    assert marker.exists()
    marker.unlink()

    result = sample(str(tmp_path / "evil.ckpt"))
    assert result.returncode == 2 and "refused, not a weights-only checkpoint" in result.stderr
    assert "Traceback" not in result.stderr and "weights_only=False" not in result.stderr
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(tmp_path / "evil.ckpt")
    assert not marker.exists()


@pytest.mark.parametrize("overrides,line", [
    # every job has the same mistake: said once
    (["init=naive,kaiming", "optim.optimizer.lr=0"], "namegen: error: optim.optimizer.lr=0 must be a finite number > 0"),
    # one job's mistake: named, and nothing launched
    (["optim.optimizer.lr=0,0.1"], "namegen: error: job 'optim.optimizer.lr=0': optim.optimizer.lr=0 must be a finite "
                                   "number > 0; makemore uses optim.optimizer.lr=0.1 (1 of 2 jobs refused; nothing launched)"),
    # a job folder name over the file system's limit
    (["init=naive,kaiming", f"hydra.sweep.subdir={'x' * 300}"], "namegen: error: hydra.sweep.subdir='/"),
])
def test_a_sweep_with_a_mistake_is_refused_once_before_launching(tmp_path, overrides, line):
    sweep = tmp_path / "sweep"
    result = run_train("-m", *overrides, "callbacks=minimal", *FAST, f"hydra.sweep.dir={sweep}", timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr + result.stdout
    assert result.stderr.strip().splitlines() == [result.stderr.strip()] and result.stderr.startswith(line)
    assert "Launching" not in result.stdout + result.stderr and not sweep.exists()


def test_resume_true_into_a_folder_that_holds_no_sweep_is_refused(tmp_path):
    result = run_train("-m", "init=naive,kaiming", "resume=true", *FAST, f"hydra.sweep.dir={tmp_path / 'typo'}")
    assert result.returncode == 2 and "holds no runs of a sweep" in result.stderr
    assert not (tmp_path / "typo").exists()  # refused as the sweep starts, before Hydra makes its folder


def test_two_trainings_into_one_run_folder_at_once_the_second_is_refused(tmp_path):
    import fcntl

    fd = os.open(tmp_path, os.O_RDONLY)  # another process holding the folder, as a training does
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        result = run_train("callbacks=minimal", *FAST, f"hydra.run.dir={tmp_path}", timeout=120)
    finally:
        os.close(fd)
    assert result.returncode == 2 and "another namegen process is training in" in result.stderr
    assert not (tmp_path / "checkpoints").exists() and not list(tmp_path.glob("events.*"))


def test_a_byte_order_mark_does_not_cost_the_first_word(tmp_path):
    path = tmp_path / "bom.txt"
    path.write_bytes("\ufeffemma\nava\n".encode("utf-8"))
    assert load_words("file", str(path)) == ["emma", "ava"]


@pytest.mark.parametrize("kind,message", [
    ("folder", "is a folder; give a file of one word per line"),
    ("fifo", "is not a regular file"),
    ("device", "is not a regular file"),
])
def test_data_path_that_is_not_a_file_says_what_it_is(tmp_path, kind, message):
    path = {"folder": tmp_path, "device": "/dev/zero"}.get(kind)
    if kind == "fifo":
        path = tmp_path / "pipe"
        os.mkfifo(path)
    with pytest.raises(DataError, match=message):
        load_words("file", str(path))


def test_sampling_a_sweep_skips_a_refused_checkpoint_and_says_so(trained_run, tmp_path, cli):
    for name in ("good", "bad"):
        shutil.copytree(trained_run, tmp_path / name)
    (tmp_path / "bad" / "checkpoints" / "best.ckpt").write_bytes(os.urandom(4096))
    code, out, err = cli("sample", str(tmp_path), "-n", "3")
    assert code == 0 and out.splitlines()[0].split() == ["good"] and len(out.splitlines()) == 2 + 3
    assert "skipping bad:" in err and "checkpoint" in err


def test_a_checkpoint_with_non_finite_weights_is_refused_at_sampling(trained_run, tmp_path, cli):
    ckpt = torch.load(trained_run / "checkpoints" / "best.ckpt", weights_only=True)
    name = next(k for k in ckpt["state_dict"] if k.endswith("weight"))
    ckpt["state_dict"][name][0, 0] = float("nan")
    torch.save(ckpt, tmp_path / "nan.ckpt")
    code, _, err = cli("sample", str(tmp_path / "nan.ckpt"))
    assert code == 2 and "non-finite weights" in err and name.removeprefix("model.") in err


def test_a_full_disk_during_training_is_one_line_and_leaves_no_partial_checkpoint(tmp_path, monkeypatch):
    """The checkpoint write fails as on a full disk: one line; the temporary file is gone."""
    import errno

    from lightning.pytorch.plugins.io import TorchCheckpointIO

    def full(self, checkpoint, path, storage_options=None):
        open(path, "wb").write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(TorchCheckpointIO, "save_checkpoint", full)
    with pytest.raises(UserError, match=r"cannot write into .* \(No space left on device\); free space"):
        train(make_cfg(tmp_path, "callbacks=minimal", *FAST))
    assert not list((tmp_path / "checkpoints").glob(".*.tmp"))
