import string
import subprocess
import sys

import pytest

from conftest import namegen


def test_sample_prints_names_from_the_vocabulary(trained_run, tmp_path):
    result = namegen("sample", str(trained_run), "-n", "20", "--seed", "7", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    names = result.stdout.splitlines()  # a name may be empty: the model may end at once
    vocab = set(string.ascii_lowercase)  # the built-in first names, lowercased, accents stripped
    assert len(names) == 20 and all(set(n) <= vocab for n in names)
    assert len(set(names)) > 10  # a trained model does not repeat one name


def test_same_seed_same_names_other_seed_other_names(trained_run):
    ckpt = str(trained_run / "checkpoints" / "last.ckpt")
    a, b, c = (namegen("sample", ckpt, "-n", "10", "--seed", s).stdout for s in ("1", "1", "2"))
    assert a == b and a != c


def test_console_script_is_installed(trained_run):
    import shutil
    from pathlib import Path

    exe = shutil.which("namegen") or str(Path(sys.executable).with_name("namegen"))
    result = subprocess.run([exe, "sample", str(trained_run), "-n", "3"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and len(result.stdout.split()) == 3, result.stderr


@pytest.mark.parametrize("args,message", [
    (["--temperature", "0"], "must be > 0"),
    (["-n", "0"], "not a positive integer"),
])
def test_bad_numbers_are_refused(trained_run, args, message):
    result = namegen("sample", str(trained_run), *args)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_missing_path(tmp_path):
    result = namegen("sample", str(tmp_path / "nope"))
    assert result.returncode == 2 and "no such file or folder" in result.stderr and "Traceback" not in result.stderr
