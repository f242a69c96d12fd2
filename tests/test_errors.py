"""Bad input gets one clear line and a non-zero exit; a crash loses nothing; a checkpoint cannot run code."""

import logging
import os
import shutil
import sys

import pytest
import torch

from conftest import FAST, make_cfg, namegen, run_train
from namegen.checkpoint import CheckpointError, load_checkpoint
from namegen.data import CharDataModule, DataError, load_words
from namegen.errors import ConfigError
from namegen.training import train


def write(tmp_path, text, name="words.txt", newline=None):
    path = tmp_path / name
    with open(path, "w", encoding="utf-8", newline=newline) as f:
        f.write(text)
    return str(path)


# -- data ---------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="data file not found: .*nope.txt'; check data.path"):
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
    ("optim.optimizer.lr=0", "optim.optimizer.lr=0 must be > 0"),
    ("optim.optimizer.lr=-0.1", "optim.optimizer.lr=-0.1 must be > 0"),
    ("model.depth=0", "model.depth=0 must be a positive integer"),
    ("model.n_hidden=0", "model.n_hidden=0 must be a positive integer"),
    ("model.block_size=0", "block_size=0 must be a positive integer"),
    ("data.batch_size=0", "batch_size=0 must be a positive integer"),
    ("trainer.max_steps=0", "trainer.max_steps=0 must be a positive integer"),
    ("threads=0", "threads=0 must be a positive integer"),
    ("trainer.max_steps=50", "trainer.max_steps=50 is not a multiple of trainer.val_check_interval=20.*max_steps=60"),
    ("optim.decay_factor=-1", "optim.decay_factor=-1 must be > 0"),
    ("steps_per_batch=0", "steps_per_batch=0 must be a positive integer"),
    ("steps_per_batch=3", r"trainer.val_check_interval=20 is not a multiple of steps_per_batch=3; set steps_per_batch=2"),
    ("+trainer.gradient_clip_val=1.0", "trainer.gradient_clip_val=1.0 is not supported"),
    ("+trainer.precision=16-mixed", "trainer.precision='16-mixed' is not supported"),
    ("callbacks.gradients.every_n_steps=25", "callbacks.gradients.every_n_steps=25 is not a multiple of steps_per_batch=10"),
])
def test_bad_numbers(tmp_path, override, message):
    with pytest.raises((ConfigError, DataError), match=message):
        train(make_cfg(tmp_path, *FAST, override))
    assert not (tmp_path / "checkpoints").exists() and not list(tmp_path.glob("events.*"))


def test_a_bad_callback_argument_names_its_config_key(tmp_path):
    with pytest.raises(ConfigError, match="callbacks.activations: .*every_n_steps"):
        train(make_cfg(tmp_path, *FAST, "callbacks.activations.every_n_steps=0"))


def test_a_user_mistake_is_one_line_and_a_failing_exit(tmp_path):
    result = run_train("data=file", f"data.path={tmp_path / 'missing.txt'}", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == f"namegen: error: data file not found: '{tmp_path / 'missing.txt'}'; check data.path"
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize("group,choice", [("init", "xavier"), ("norm", "groupnorm")])
def test_unknown_choice_lists_the_valid_ones(tmp_path, group, choice):
    result = run_train(f"{group}={choice}", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 1 and f"Could not find '{group}/{choice}'" in result.stderr
    assert "Available options" in result.stderr and "Traceback" not in result.stderr


def test_resume_true_in_a_single_run_asks_for_the_folder(tmp_path):
    # run from tmp_path: the new timestamped folder Hydra makes lands there, not in the repo
    result = run_train("resume=true", cwd=tmp_path, timeout=120)
    assert result.returncode == 1 and "use resume=outputs/runs/<time>" in result.stderr
    assert not list(tmp_path.glob("outputs/runs/*/checkpoints"))


# continue trained_run (300 steps, the default steps_per_batch) in a copy of its folder
RESUME = ["resume=true", "callbacks=minimal", "trainer.max_steps=400", "trainer.val_check_interval=100",
          "trainer.num_sanity_val_steps=0"]


def test_resume_with_another_model_is_refused(trained_run, tmp_path):
    shutil.copytree(trained_run / "checkpoints", tmp_path / "checkpoints")
    with pytest.raises(ConfigError, match="model.depth=5, not 3"):
        train(make_cfg(tmp_path, *RESUME, "model.depth=3"))


def test_resume_with_another_steps_per_batch_is_refused(trained_run, tmp_path):
    shutil.copytree(trained_run / "checkpoints", tmp_path / "checkpoints")
    with pytest.raises(ConfigError, match="trained with steps_per_batch=50, not 10; resume with steps_per_batch=50"):
        train(make_cfg(tmp_path, *RESUME, "steps_per_batch=10"))


def test_an_older_checkpoint_format_samples_but_does_not_resume(trained_run, tmp_path):
    shutil.copytree(trained_run / "checkpoints", tmp_path / "checkpoints")
    for path in (tmp_path / "checkpoints").glob("*.ckpt"):
        ckpt = torch.load(path, weights_only=True)
        ckpt["namegen"]["version"] = 1  # before steps_per_batch: global_step was counted another way
        torch.save(ckpt, path)
    with pytest.raises(ConfigError, match=r"older namegen \(checkpoint format 1\).*start a new run"):
        train(make_cfg(tmp_path, *RESUME))
    assert sample(str(tmp_path), "-n", "3").returncode == 0


def test_report_on_a_missing_folder(tmp_path):
    result = namegen("report", str(tmp_path / "nope"))
    assert result.returncode == 2 and "no such sweep folder" in result.stderr and "Traceback" not in result.stderr


# -- divergence ------------------------------------------------------------------------


def test_divergence_stops_at_the_step_keeps_logs_and_the_last_good_checkpoint(tmp_path):
    # lr x 1e30 from step 60 on: the loss is finite until then and explodes right after
    cfg = make_cfg(tmp_path, "callbacks=minimal", "trainer.max_steps=120", "trainer.val_check_interval=20",
                   "optim.decay_at=0.5", "optim.decay_factor=1e30", "log_every_n_steps=10", "steps_per_batch=10")
    result = train(cfg)
    assert result["status"] == "diverged"
    step = int(result["error"].split("at step ")[1])
    assert 60 <= step < 70 and result["steps"] == step
    assert result["error"].startswith("loss became nan") or result["error"].startswith("loss became inf")
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 60 and all(torch.isfinite(v).all() for v in last["state_dict"].values())
    assert list(tmp_path.glob("events.out.tfevents.*")) and (tmp_path / "result.json").is_file()


def test_divergence_report_names_each_layer(tmp_path, caplog):
    cfg = make_cfg(tmp_path, "callbacks=minimal", "optim.optimizer.lr=1e30", "model.depth=3", *FAST)
    with caplog.at_level(logging.ERROR):
        assert train(cfg)["status"] == "diverged"
    assert all(f"layer {i}: mean" in caplog.text for i in range(3)) and "layer 3:" not in caplog.text
    assert "saturation" in caplog.text and "weight_absmax" in caplog.text


# -- checkpoints --------------------------------------------------------------------------


def sample(*args):
    return namegen("sample", *args)


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
    assert result.returncode == 2 and "refused to load" in result.stderr and "Traceback" not in result.stderr
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(tmp_path / "evil.ckpt")
    assert not marker.exists()
