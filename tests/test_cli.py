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
