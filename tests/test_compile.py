"""compile=true and a user's own torch.compile: compiled training steps, eager steps wherever Diagnostics records,
the same names, eager training when compilation fails, resume. Tiny nets and few steps: the first compile of a
graph takes seconds."""

import csv
import json

import lightning as L
import pytest
import torch

from conftest import make_cfg, read_events, run_train
from namegen.checks import validate
from namegen.errors import ConfigError
from namegen.module import compile_wanted
from namegen.training import train

TINY = ["model.n_hidden=16", "model.depth=2", "trainer.num_sanity_val_steps=0", "trainer.log_every_n_steps=5"]


class Note(torch.nn.Module):
    """Counts the network's eager runs: traced by Dynamo, the branch is constant False and leaves no trace."""

    def __init__(self, eager: list[int]):
        super().__init__()
        self.eager = eager

    def forward(self, x):
        if not torch.compiler.is_compiling():
            self.eager.append(1)
        return x


class Compiled(L.LightningModule):
    """A user's module that compiles its network itself: `self.model = torch.compile(model)`."""

    def __init__(self, compile: bool):
        super().__init__()
        torch.manual_seed(0)
        self.eager: list[int] = []
        net = torch.nn.Sequential(Note(self.eager), torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 16),
                                  torch.nn.ReLU(), torch.nn.Linear(16, 3))
        self.model = torch.compile(net) if compile else net

    def forward(self, x):
        return self.model(x)

    def training_step(self, batch, batch_idx):
        return torch.nn.functional.cross_entropy(self(batch[0]), batch[1])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_a_users_compiled_model_is_recorded_on_every_scalar_step_as_eager_and_without_orig_mod(tmp_path):
    """Issue 26: under `torch.compile(model)` the data stopped after step 0 and the tags gained `_orig_mod.`."""
    from lightning.pytorch.loggers import TensorBoardLogger
    from torch.utils.data import DataLoader

    from namegen.callbacks import Activations, Diagnostics, Gradients, UpdateRatios

    x, y = torch.randn(8, 4, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    torch.compiler.reset()  # Dynamo's per-function recompile limit, spent by earlier tests on nn.Sequential
    scalars, modules = {}, {}
    for name in ("eager", "compiled"):
        modules[name] = module = Compiled(name == "compiled")
        trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=8, enable_checkpointing=False,
                            # two callbacks, whose recording steps overlap: the compiler's stance is shared
                            callbacks=[Diagnostics(3, 3, None, [Activations(), Gradients()]),
                                       Diagnostics(3, None, None, [UpdateRatios()])],
                            logger=TensorBoardLogger(tmp_path / name, name="", version=""), enable_progress_bar=False,
                            enable_model_summary=False, limit_val_batches=0)
        trainer.fit(module, train_dataloaders=DataLoader([(x, y)] * 9, batch_size=None))
        events = read_events(tmp_path / name)
        scalars[name] = {tag: {e.step: e.value for e in events.Scalars(tag)} for tag in events.Tags()["scalars"]}
    eager, compiled = scalars["eager"], scalars["compiled"]
    assert not [t for t in compiled if "_orig_mod" in t]
    assert compiled.keys() == eager.keys()
    assert sorted(compiled["act/00.model.2/std"]) == [0, 3, 6, 7]  # every scalar step and the last, not step 0 alone
    for tag, points in eager.items():
        assert compiled[tag] == pytest.approx(points, rel=1e-4, abs=1e-6), tag
    # the 4 steps that record nothing (1, 2, 4, 5) ran compiled: 4 eager runs fewer (the others: the 4 recording
    # steps, and each Diagnostics trying the parameter-free Note on a probe tensor at fit start, in both runs)
    assert len(modules["compiled"].eager) == len(modules["eager"].eager) - 4
    # and the fit left the compiler as it found it: the compiled model runs compiled
    before = len(modules["compiled"].eager)
    modules["compiled"].model(x)
    assert len(modules["compiled"].eager) == before


def test_no_orig_mod_in_checkpoints_tags_csv_columns_or_names(tmp_path):
    run_dir = tmp_path / "run"
    train(make_cfg(run_dir, "compile=true", "callbacks=default", "logger=[tensorboard,csv]", "trainer.max_steps=20",
                   "trainer.val_check_interval=10", *TINY, "callbacks.diagnostics.every_n_steps=5"))
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    eager_keys = set(make_module().state_dict())
    assert set(ckpt["state_dict"]) == eager_keys  # the eager module's keys, nothing added
    names = [*ckpt["state_dict"], *ckpt["hyper_parameters"], *ckpt.get("callbacks", {})]
    events = read_events(run_dir)
    tags = [t for kind in ("scalars", "histograms", "images") for t in events.Tags()[kind]]
    # the diagnostics wrote their scalars on the compiled run's eager steps: every 5 steps and the last
    assert [e.step for e in events.Scalars("act/00.model.hidden.0.act/std")] == [0, 5, 10, 15, 19]
    (metrics,) = run_dir.glob("**/metrics.csv")
    with open(metrics) as f:
        columns = next(csv.reader(f))
    assert "train/loss" in columns and tags
    assert not [n for n in [*names, *tags, *columns] if "_orig_mod" in n]


def make_module():
    from namegen.module import NameGen

    return NameGen({"arch": "mlp", "vocab_size": 27, "block_size": 3, "n_hidden": 16, "depth": 2}, list(".abc"),
                   compile=True)


def test_compile_failing_trains_eager_with_one_line(tmp_path):
    # no C++ compiler on PATH (an empty folder; the run's Python is named by its path) and an empty kernel cache
    bare = tmp_path / "bin"
    bare.mkdir()
    env = {"PATH": str(bare), "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "cache")}
    result = run_train("compile=true", "callbacks=minimal", "trainer.max_steps=20", "trainer.val_check_interval=10",
                       *TINY, f"hydra.run.dir={tmp_path / 'run'}", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    output = (result.stdout + result.stderr).splitlines()
    failed = [line for line in output if "torch.compile failed" in line]
    assert len(failed) == 1 and "training on without compiling" in failed[0], "\n".join(output[-40:])
    assert not [line for line in output if "Traceback" in line]
    record = json.loads((tmp_path / "run" / "result.json").read_text())
    assert record["status"] == "ok" and record["steps"] == 20


def test_a_resumed_compiled_run_ends_bit_identical_to_an_uninterrupted_one(tmp_path):
    command = ["compile=true", "callbacks=minimal", "trainer.max_steps=40", "trainer.val_check_interval=20", *TINY]
    train(make_cfg(tmp_path / "whole", *command))
    with pytest.raises(RuntimeError, match="interrupted at step 30"):  # after the checkpoint of step 20
        train(make_cfg(tmp_path / "cut", *command, "+callbacks.stop._target_=test_resume.Interrupt",
                       "+callbacks.stop.at=30"))
    assert torch.load(tmp_path / "cut" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 20
    train(make_cfg(tmp_path / "cut", *command, "resume=true"))
    a, b = (torch.load(tmp_path / name / "checkpoints" / "last.ckpt", weights_only=True) for name in ("whole", "cut"))
    assert a["global_step"] == b["global_step"] == 40
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    curve = lambda name: [(e.step, e.value) for e in read_events(tmp_path / name).Scalars("val/loss")]  # noqa: E731
    assert curve("cut")[-1] == curve("whole")[-1]


# compile=auto compiles runs of 100k steps and more (namegen.module.COMPILE_AUTO: what the benchmark measured here)
@pytest.mark.parametrize(("overrides", "compiles"), [([], False), (["experiment=makemore", "data.path=x"], True),
                                                     (["compile=true"], True), (["experiment=makemore", "data.path=x",
                                                                                 "compile=false"], False)])
def test_auto_compiles_makemore_not_the_default_run(tmp_path, overrides, compiles):
    cfg = make_cfg(tmp_path, *overrides)
    assert compile_wanted(cfg.compile, cfg.trainer.max_steps) is compiles


@pytest.mark.parametrize("value", ["yes", "1", "null"])
def test_a_compile_value_that_is_not_auto_true_or_false_is_refused(tmp_path, value):
    with pytest.raises(ConfigError, match=r"compile=.* must be auto \(what the benchmark measured as faster here\), "
                                          r"true or false"):
        validate(make_cfg(tmp_path, f"compile={value}"))


def test_the_diagnostics_callback_records_the_same_values_compiled_as_eager(tmp_path):
    scalars = {}
    for compile in ("false", "true"):
        train(make_cfg(tmp_path / compile, f"compile={compile}", "callbacks=default", "trainer.max_steps=20",
                       "trainer.val_check_interval=10", *TINY, "callbacks.diagnostics.every_n_steps=5"))
        events = read_events(tmp_path / compile)
        scalars[compile] = {tag: {e.step: e.value for e in events.Scalars(tag)} for tag in events.Tags()["scalars"]
                            if tag.startswith(("act/", "grad/", "grad_data_ratio/", "update_ratio/", "norm/"))}
    eager, compiled = scalars["false"], scalars["true"]
    assert compiled.keys() == eager.keys() and len(eager) > 10
    assert sorted(eager["act/00.model.hidden.0.act/std"]) == [0, 5, 10, 15, 19]
    for tag in eager:
        assert sorted(compiled[tag]) == sorted(eager[tag]), tag  # recorded on the same steps
        assert compiled[tag].get(0) == eager[tag].get(0), tag  # step 0: the same weights, both eager
        for step, value in eager[tag].items():
            assert compiled[tag][step] == pytest.approx(value, rel=1e-3, abs=1e-6), (tag, step)
