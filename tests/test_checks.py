"""One check before a command writes anything or spends a resource (namegen.checks.validate), one rule for a folder
that already holds a run, one estimate of what a run allocates (namegen.budget): each case of issue 20."""

import hashlib
import json
import os
import shutil
import tracemalloc

import pytest
import torch

from conftest import FAST, make_cfg, run_train
from namegen.budget import model_estimate
from namegen.checks import validate
from namegen.data import build_examples, build_sequences
from namegen.errors import UserError
from namegen.nets import build_model
from namegen.training import train
from namegen.vocab import Vocab

UNSET = "NAMEGEN_TEST_VARIABLE_NEVER_SET"
NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")


def tree(path):
    """{file: sha256} of everything under `path`: equal before and after means nothing was written."""
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


# -- the rule table and the estimate, in-process ----------------------------------------------------------------


@pytest.mark.parametrize("overrides,message", [
    ([f"seed=${{oc.env:{UNSET}}}"], rf"seed='\$\{{oc.env:{UNSET}\}}' cannot be resolved \(.*not found.*\); give"),
    pytest.param(["trainer.accelerator=gpu"], r"trainer.accelerator='gpu' names a device this machine does not "
                 r"have; choose one of cpu, auto", marks=NO_GPU),
    (["trainer.accelerator=tpu"], r"trainer.accelerator='tpu' names a device this machine does not have"),
    (["trainer=ddp", "trainer.devices=100000"], r"trainer.devices=100000 must be .* set trainer.devices<=\d+"),
    (["trainer.devices=0"], r"trainer.devices=0 must be 'auto', -1 or a number of processes"),
    (["optim.scheduler.milestones=[abc]"], r"optim.scheduler.milestones=\['abc'\] must be steps of the run, integers "
                                           r"from 1 to trainer.max_steps=20000"),
    (["trainer.max_steps=100", "optim.scheduler.milestones=[150]"], r"milestones=\[150\] must be steps of the run"),
    (["data=file", "data.path="], r"^data.path is empty; give a file of one word per line$"),
    (["model=transformer", "norm=layernorm", "model.block_size=300000"],
     r"the run would allocate about [\d,.]+ TiB .*; make .*model.block_size=300000"),
    (["data.batch_size=1000000000"], r"the run would allocate .*\(a batch's activations .*; make data.batch_size"),
    # 100,000 blocks of 12*64^2 + 9*64 + 2*2*64 = 49,984, embeddings (27 + 51) * 64, final norm 128, head 27*64
    (["model=transformer", "norm=layernorm", "model.n_layer=100000"],
     r"the run would allocate .*model.n_layer=100000, .*4,998,406,848 parameters"),
    (["model.n_hidden=1000000"], r"would allocate .*\(parameters .*model.n_hidden=1000000"),
    (["callbacks=attention"], r"^callbacks.diagnostics is not a callback \(it has no _target_\): choose a callback "
                              r"set, callbacks=default, minimal or transformer$"),
])
def test_refused_in_one_line_before_anything_is_built_or_written(tmp_path, monkeypatch, overrides, message):
    monkeypatch.delenv(UNSET, raising=False)
    # counting parameters builds nothing: a 100,000-layer model took minutes just to construct on the meta device
    monkeypatch.setattr(torch.nn.Module, "__init__", lambda *a, **k: pytest.fail("validate built a module"))
    run = tmp_path / "run"
    with pytest.raises(UserError, match=message) as refused:
        validate(make_cfg(run, *overrides))
    assert "\n" not in str(refused.value) and len(str(refused.value)) < 400
    assert not run.exists()


@pytest.mark.parametrize("spec", [
    dict(arch="mlp", block_size=3, n_embd=10, n_hidden=100, depth=5, norm="batchnorm"),
    dict(arch="mlp", block_size=5, n_embd=7, n_hidden=33, depth=2, norm="none"),
    dict(arch="mlp", block_size=2, n_embd=4, n_hidden=9, depth=1, norm="layernorm"),
    dict(arch="transformer", block_size=16, n_layer=4, n_head=4, n_embd=64, norm="layernorm"),
    dict(arch="transformer", block_size=7, n_layer=3, n_head=3, n_embd=12, norm="none"),
])
def test_the_parameter_arithmetic_counts_what_torch_builds(spec):
    vocab = 27
    built = sum(p.numel() for p in build_model({**spec, "vocab_size": vocab}).parameters())
    full = {"activation": "tanh" if spec["arch"] == "mlp" else "gelu", **spec}
    assert model_estimate(full, vocab).parameters == built


def test_the_lessons_mlp_has_47024_parameters():  # the reference fact, makemore part 3
    spec = dict(arch="mlp", block_size=3, n_embd=10, n_hidden=100, depth=5, norm="batchnorm")
    assert model_estimate(spec, 27).parameters == 47_024


def test_a_gigabyte_of_zeros_is_refused_before_it_is_read(tmp_path):
    zeros = tmp_path / "zeros.txt"
    with open(zeros, "wb") as f:
        f.truncate(2**30)  # sparse: a gigabyte of NUL bytes that takes no disk
    tracemalloc.start()
    with pytest.raises(UserError, match=r"holds binary data \(a NUL byte at byte 0\), not text"):
        validate(make_cfg(tmp_path / "run", "data=file", f"data.path={zeros}"))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 2**24  # far below the file: it was not read


def makemore_windows(words, vocab, block_size):
    """makemore's own loop (build_dataset), the reference the tensors must equal."""
    xs, ys = [], []
    for w in words:
        context = [0] * block_size
        for ch in w + ".":
            ix = vocab.stoi[ch]
            xs.append(context)
            ys.append(ix)
            context = context[1:] + [ix]
    return torch.tensor(xs), torch.tensor(ys)


@pytest.mark.parametrize("block_size", [1, 3, 8])
def test_example_tensors_equal_makemores_and_hold_no_python_lists(names_txt, block_size):
    words = names_txt.read_text().split()
    vocab = Vocab.from_words(words)
    tracemalloc.start()  # counts Python objects (lists, ints), not torch's tensor storage
    x, y = build_examples(words, vocab, block_size)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    rx, ry = makemore_windows(words, vocab, block_size)
    assert torch.equal(x, rx) and torch.equal(y, ry)
    assert peak < 8 * len(y)  # bytes of Python objects per example; a Python list of ids is ~90


def test_whole_name_sequences_by_hand():
    vocab = Vocab.from_words(["ab", "b"])  # . a b -> 0 1 2
    x, y = build_sequences(["ab", "b"], vocab, 4)
    assert x.tolist() == [[0, 1, 2, 0], [0, 2, 0, 0]]
    assert y.tolist() == [[1, 2, 0, -1], [2, 0, -1, -1]]


@pytest.mark.parametrize("kind,message", [
    ("file", r"run_dir='.*': .*taken is a file, not a folder; give another folder"),
    ("long", r"the folder name 'xxxx.*' \(302 characters\) is 300 bytes, more than the file system's 255"),
    ("readonly", r"is not writable \(permission denied\)"),
])
def test_an_output_folder_that_cannot_be_made_is_refused(tmp_path, kind, message):
    if kind == "readonly" and os.geteuid() == 0:
        pytest.skip("root writes into a read-only folder")
    (tmp_path / "taken").write_text("a file")
    (tmp_path / "ro").mkdir(mode=0o555)
    run = {"file": tmp_path / "taken" / "run", "long": tmp_path / ("x" * 300), "readonly": tmp_path / "ro" / "run"}[kind]
    with pytest.raises(UserError, match=message):
        validate(make_cfg(run))


# -- a folder that holds a run: never written over, only continued as it was trained --------------------------


@pytest.fixture
def finished(trained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    return run


RESUME = ["callbacks=minimal", "trainer.max_steps=300", "trainer.val_check_interval=100", "trainer.num_sanity_val_steps=0"]


@pytest.mark.parametrize("overrides,message", [
    ([], r"already holds a run \(its .hydra/config.yaml\); continue it with resume="),
    (["resume=true", "callbacks.checkpoint.mode=max"], r"was trained with callbacks.checkpoint.mode='min', not 'max'"),
    (["resume=true", "callbacks.checkpoint.monitor=train/loss"], r"callbacks.checkpoint.monitor='val/loss', not"),
])
def test_a_finished_run_is_never_written_over(finished, overrides, message):
    before = tree(finished)
    with pytest.raises(UserError, match=message):
        train(make_cfg(finished, *RESUME, *overrides))
    assert tree(finished) == before


def test_a_run_into_a_sweep_folder_is_refused(finished):
    sweep = finished.parent  # holds a run folder: a run trained at its root would hide its runs from the sweep
    before = tree(sweep)
    with pytest.raises(UserError, match=r"holds a sweep's runs \(1, such as run\); give a new folder"):
        train(make_cfg(sweep, *RESUME))
    assert tree(sweep) == before


def test_resume_names_the_conflict_with_another_folder(finished, tmp_path):
    with pytest.raises(UserError, match=f"resume={finished} continues that run in its own folder, but run_dir="
                                        f"{tmp_path / 'other'} names another; drop one of them"):
        validate(make_cfg(tmp_path / "other", *RESUME, f"resume={finished}"))


def test_a_resume_keeps_the_record_and_logs_itself_beside_it(finished):
    record = (finished / ".hydra" / "config.yaml").read_text()
    result = (finished / "result.json").read_text()
    train(make_cfg(finished, *RESUME, "resume=true", "threads=2", "logger=csv"))  # nothing left to train
    assert (finished / ".hydra" / "config.yaml").read_text() == record
    assert (finished / "result.json").read_text() == result
    (line,) = (finished / ".hydra" / "resumes.jsonl").read_text().splitlines()
    logged = json.loads(line)
    assert logged["from_step"] == 300 and logged["changed"]["threads"] == {"was": 1, "now": 2}
    assert "logger.csv._target_" in logged["changed"]


def test_a_resume_on_a_changed_corpus_is_refused(tmp_path, names_txt):
    words = tmp_path / "words.txt"
    lines = names_txt.read_text().splitlines()[:2000]
    words.write_text("\n".join(lines) + "\n")
    run = tmp_path / "run"
    cfg = ["data=file", f"data.path={words}", "callbacks=minimal", *FAST]
    train(make_cfg(run, *cfg))
    assert json.loads((run / ".hydra" / "data.json").read_text())["bytes"] == words.stat().st_size
    words.write_text("\n".join(lines[300:]) + "\n")  # 300 names removed: another split
    before = tree(run)
    with pytest.raises(UserError, match=r"^resume: the corpus changed since .* \([\d,]+ bytes, sha256 \w{12} then; "
                                        r"[\d,]+ bytes, \w{12} now\): its train/val/test split would differ"):
        train(make_cfg(run, *cfg, "resume=true"))
    assert tree(run) == before


# -- the same checks where the user meets them: train.py, before Lightning loads and before Hydra makes a folder --


@pytest.mark.parametrize("overrides,message", [
    (["trainer=ddp", "trainer.devices=100000"], "trainer.devices=100000 must be"),  # the fork bomb
    (["model=transformer", "norm=layernorm", "model.block_size=300000"], "the run would allocate about"),  # the OOM
    ([f"seed={'9' * 5000}"], r"seed=99999.*9999 \(5000 characters\) must be an integer in 0 .. 2\*\*32 - 1"),
])
def test_train_py_refuses_before_spawning_or_allocating(tmp_path, overrides, message):
    import re

    run = tmp_path / "run"
    result = run_train(*overrides, f"hydra.run.dir={run}", env={"PYTHONPROFILEIMPORTTIME": "1"}, timeout=120)
    assert result.returncode == 2
    assert "| lightning" not in result.stderr  # refused by the check, before the training stack (and DDP) loads
    last = [line for line in result.stderr.splitlines() if not line.startswith("import time:")][-1]
    assert re.match(f"namegen: error: {message}", last) and "Traceback" not in result.stderr
    assert not run.exists()


def test_train_py_into_a_finished_run_folder_is_refused_and_writes_nothing(finished):
    before = tree(finished)
    result = run_train(*RESUME, f"hydra.run.dir={finished}", timeout=120)
    assert result.returncode == 2 and "already holds a run" in result.stderr and "Traceback" not in result.stderr
    assert tree(finished) == before


def test_dropped_words_are_a_warning_on_stderr(tmp_path):
    words = tmp_path / "words.txt"
    words.write_text("ann\nb2\nbo\n")  # b2 is dropped; two words are then too few to split: refused after reading
    result = run_train("data=file", f"data.path={words}", f"hydra.run.dir={tmp_path / 'run'}", timeout=120)
    assert result.returncode == 2 and "too few for a train/val/test split" in result.stderr
    assert "dropped 1 words" in result.stderr and "dropped" not in result.stdout
