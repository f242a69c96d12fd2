"""The `namegen` command, in-process (`main(argv)`), and once as the installed console script."""

import shutil
import string
import subprocess
import sys
from pathlib import Path

import pytest

from namegen.cli import main


@pytest.fixture
def cli(capsys):
    def run(*args):
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def test_sample_prints_names_from_the_vocabulary(trained_run, cli):
    code, out, err = cli("sample", trained_run, "-n", "20", "--seed", "7")
    assert code == 0, err
    names = out.splitlines()  # a name may be empty: the model may end at once
    assert len(names) == 20 and all(set(n) <= set(string.ascii_lowercase) for n in names)
    assert len(set(names)) > 10  # a trained model does not repeat one name


def test_same_seed_same_names_other_seed_other_names(trained_run, cli):
    ckpt = trained_run / "checkpoints" / "last.ckpt"
    a, b, c = (cli("sample", ckpt, "-n", "10", "--seed", s)[1] for s in ("1", "1", "2"))
    assert a == b and a != c


def test_the_ith_name_of_a_seed_does_not_depend_on_n(trained_run, cli):
    few = cli("sample", trained_run, "-n", "3", "--seed", "5")[1].splitlines()
    many = cli("sample", trained_run, "-n", "150", "--seed", "5")[1].splitlines()  # 3 chunks of 64
    assert few == many[:3] and len(many) == 150


def test_console_script_is_installed(trained_run):
    exe = shutil.which("namegen") or str(Path(sys.executable).with_name("namegen"))
    result = subprocess.run([exe, "sample", str(trained_run), "-n", "3"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and len(result.stdout.split()) == 3, result.stderr


@pytest.mark.parametrize("args,message", [
    (["--temperature", "0"], "argument --temperature: 0.0 must be > 0 and finite"),
    (["--temperature", "inf"], "argument --temperature: inf must be > 0 and finite"),
    (["-n", "0"], "argument -n: 0 is not a positive integer"),
    (["--seed", str(2**64)], f"argument --seed: {2**64} is out of range; give a seed in 0 .. 2**63 - 1"),
    (["--seed", "x"], "argument --seed: 'x' is not an integer"),
])
def test_bad_numbers_are_refused(tmp_path, capsys, args, message):
    """Refused by the argument checks, before the path is even looked at: one line naming the option and value."""
    with pytest.raises(SystemExit) as exit_:
        main(["sample", str(tmp_path), *args])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith(f"namegen sample: error: {message}") and "Traceback" not in err


def test_a_tiny_temperature_is_greedy_not_a_crash(trained_run, cli):
    code, out, _ = cli("sample", trained_run, "-n", "5", "--temperature", "1e-45")
    assert code == 0 and len(set(out.splitlines())) == 1  # the most likely name, five times


def test_missing_path(tmp_path, cli):
    code, _, err = cli("sample", tmp_path / "nope")
    assert code == 2 and "no such file or folder" in err


def test_help_answers_without_loading_torch():
    code = "import sys; from namegen.cli import parser; parser().format_help(); print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "False"


def test_train_help_lists_exactly_the_choices(tmp_path):
    """Every option file of each group, except conf/callbacks' single-callback building blocks, and nothing else."""
    import re

    import yaml

    from conftest import REPO, run_train

    help_text = run_train("--help", timeout=60).stdout
    listed = dict(re.findall(r"^(\w+): (.+)$", help_text.split("== Choices", 1)[1].split("== Config", 1)[0], re.M))
    for group, options in listed.items():
        files = {p.stem for p in (REPO / "conf" / group).glob("*.yaml")
                 if group != "callbacks" or "defaults" in (yaml.safe_load(p.read_text()) or {})}
        shown = {o.strip() for o in options.split(", ") if not o.startswith("[")}
        assert shown == files, group
    assert set(listed) == {p.name for p in (REPO / "conf").iterdir() if p.is_dir() and p.name != "hydra"}


# -- refusals before anything is opened or allocated (issue 20) ---------------------------------------------------


def test_a_fifo_is_refused_without_opening_it(tmp_path, cli):
    import os

    os.mkfifo(tmp_path / "pipe.ckpt")  # opening it for reading would wait for a writer forever
    code, _, err = cli("sample", tmp_path / "pipe.ckpt")
    assert code == 2 and "is not a regular file (a device, FIFO or socket)" in err


def test_every_seed_the_help_allows_samples(trained_run, cli):
    top = str(2**63 - 1)
    assert "0 .. 2**63 - 1" in cli_help_error(cli, str(2**63))  # the range the help and the refusal state
    code, out, err = cli("sample", trained_run, "-n", "3", "--seed", top)
    assert code == 0 and len(out.splitlines()) == 3, err
    assert cli("sample", trained_run, "-n", "3", "--seed", top)[1] == out


def cli_help_error(cli, seed):
    with pytest.raises(SystemExit) as exit_:
        cli("sample", ".", "--seed", seed)
    assert exit_.value.code == 2
    return str(exit_.value.__context__)


def edited(trained_run, tmp_path, **changes):
    import torch

    ckpt = torch.load(trained_run / "checkpoints" / "best.ckpt", weights_only=True)
    hp = ckpt["hyper_parameters"]
    ckpt["hyper_parameters"] = {**hp, "model": {**hp["model"], **changes.get("model", {})},
                                "vocab": changes.get("vocab", hp["vocab"])}
    torch.save(ckpt, tmp_path / "edited.ckpt")
    return tmp_path / "edited.ckpt"


def test_an_edited_model_size_is_refused_before_the_model_is_built(trained_run, tmp_path, cli, monkeypatch):
    import torch

    path = edited(trained_run, tmp_path, model={"n_hidden": 12000})
    monkeypatch.setattr(torch.nn.Module, "__init__", lambda *a, **k: pytest.fail("built the model"))
    code, _, err = cli("sample", path)
    # (3*10) * 12000 + 4 * 12000^2 + 12000 * 27 weights, 2 * (5 * 12000 + 27) norm parameters, 27 * 10 embeddings
    assert code == 2 and "its metadata describes a model of 576,804,324 parameters but the file holds" in err


@pytest.mark.parametrize("entry,shown", [("\x1b[31m", r"'\x1b[31m'"), (5, "5"), ("ab", "'ab'"), ("\n", r"'\n'")])
def test_vocabulary_entries_must_be_single_printable_characters(trained_run, tmp_path, cli, entry, shown):
    import torch

    vocab = torch.load(trained_run / "checkpoints" / "best.ckpt", weights_only=True)["hyper_parameters"]["vocab"]
    code, out, err = cli("sample", edited(trained_run, tmp_path, vocab=vocab[:-1] + [entry]))
    assert code == 2 and f"invalid vocabulary entry {shown}: each must be a single printable character" in err
    assert "\x1b" not in err + out  # escaped, never sent to the terminal


def test_a_raw_pickle_is_named_as_holding_python_objects(tmp_path, cli):
    import pickle

    (tmp_path / "raw.ckpt").write_bytes(pickle.dumps({"state_dict": {}}))
    code, _, err = cli("sample", tmp_path / "raw.ckpt")
    assert code == 2 and "a raw Python pickle, not a torch checkpoint: it holds Python objects" in err


def test_a_run_without_best_ckpt_samples_its_last_and_says_so(trained_run, tmp_path, cli):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    (run / "checkpoints" / "best.ckpt").unlink()  # as a run trained with +trainer.limit_val_batches=0 has none
    code, out, err = cli("sample", run, "-n", "4", "--seed", "3")
    assert code == 0 and out == cli("sample", run / "checkpoints" / "last.ckpt", "-n", "4", "--seed", "3")[1]
    assert "has no checkpoints/best.ckpt" in err and "using its last.ckpt" in err


# -- report and diagnose ------------------------------------------------------------------------------------------


def test_report_and_diagnose_on_a_file_say_it_is_a_file(tmp_path, cli):
    (tmp_path / "notes.txt").write_text("x")
    for command in ("report", "diagnose"):
        code, _, err = cli(command, tmp_path / "notes.txt")
        assert code == 2 and "is a file, not a folder; give a run folder" in err


def test_report_out_on_an_existing_file_is_refused_and_writes_nothing(trained_run, tmp_path, cli):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    (tmp_path / "taken").write_text("x")
    before = sorted(p.name for p in run.rglob("*"))
    code, _, err = cli("report", run, "--out", tmp_path / "taken")
    assert code == 2 and "is a file, not a folder" in err
    assert sorted(p.name for p in run.rglob("*")) == before and (tmp_path / "taken").read_text() == "x"


def test_report_of_a_sweep_with_a_result_that_is_not_an_object(trained_run, tmp_path, cli):
    sweep = tmp_path / "sweep"
    for name in ("a", "b"):
        shutil.copytree(trained_run, sweep / name)
    (sweep / "b" / "result.json").write_text("[1, 2]")
    code, out, err = cli("report", sweep, "--out", tmp_path / "report", "-n", "2")
    assert code == 0, err
    md = (tmp_path / "report" / "report.md").read_text()
    assert "| b | failed |" in md and "a JSON list, not an object" in md
    assert not (sweep / "summary.md").exists()  # the sweep's own records are not written by a report
