"""compile=true: compiled training steps, eager steps wherever a callback records, the same names, eager training
when compilation fails, resume. Tiny nets and few steps: the first compile of a graph takes seconds."""

import csv
import json
from pathlib import Path

import lightning as L
import pytest
import torch

from conftest import REPO, make_cfg, read_events, run_train
from namegen.checks import validate
from namegen.errors import ConfigError
from namegen.module import compile_wanted
from namegen.training import train

TINY = ["model.n_hidden=16", "model.depth=2", "trainer.num_sanity_val_steps=0", "trainer.log_every_n_steps=5"]
RECORDED = [0, 7, 19]  # the last of 20 steps too: diagnostics record it


class TanhStds(L.Callback):
    """A diagnostic of the test's own: each Tanh's output std through forward hooks, on the steps `records_at`
    names, written to `out` at the end of the fit with whether the module's compiled forward ran."""

    def __init__(self, steps: list[int], out: str):
        self.steps, self.out = set(steps), out
        self.stds: dict[int, dict[str, float]] = {}
        self.compiling: list[bool] = []
        self.handles: list = []

    def records_at(self, step: int) -> bool:
        return step in self.steps

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        step = trainer.global_step
        if self.records_at(step):
            for name, module in pl_module.named_modules():
                if isinstance(module, torch.nn.Tanh):
                    self.handles.append(module.register_forward_hook(self.hook(step, name)))

    def hook(self, step: int, name: str):
        def record(module, args, out):
            # traced by Dynamo (a compiled step) the hook would be compiled into the graph: marked so
            self.compiling.append(torch.compiler.is_compiling())
            self.stds.setdefault(step, {})[name] = out.std().item()
        return record

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        for handle in self.handles:
            handle.remove()
        self.handles.clear()

    def on_train_end(self, trainer, pl_module):
        Path(self.out).write_text(json.dumps({"stds": self.stds, "compiled": pl_module.compile_checked,
                                                "compiling": self.compiling}))


def run(run_dir: Path, compile: str, *extra: str) -> dict:
    train(make_cfg(run_dir, f"compile={compile}", "callbacks=minimal", "trainer.max_steps=20",
                   "trainer.val_check_interval=10", *TINY, "+callbacks.tanh._target_=test_compile.TanhStds",
                   f"+callbacks.tanh.steps={RECORDED}", f"+callbacks.tanh.out={run_dir / 'tanh.json'}", *extra))
    return json.loads((run_dir / "tanh.json").read_text())


def test_compiled_runs_record_on_eager_steps_what_an_eager_run_records(tmp_path):
    eager = run(tmp_path / "eager", "false")
    compiled = run(tmp_path / "compiled", "true")
    assert eager["compiled"] is False and compiled["compiled"] is True  # the other steps did run compiled
    # every recording step recorded both activations: none ran compiled, where Dynamo skips hooks added later
    assert sorted(map(int, compiled["stds"])) == RECORDED
    assert compiled["compiling"] == [False] * 6  # 2 tanh x 3 steps, each run eagerly
    assert all(len(stds) == 2 for stds in compiled["stds"].values())
    # step 0: the same weights, both eager: the same values to the bit
    assert compiled["stds"]["0"] == eager["stds"]["0"]
    # later steps follow updates computed by fused kernels: the same within float rounding
    for step in ("7", "19"):
        assert compiled["stds"][step] == pytest.approx(eager["stds"][step], rel=1e-4)
    # a tanh's output std lies in (0, 1): the hooks saw real activations
    assert all(0 < v < 1 for stds in compiled["stds"].values() for v in stds.values())
    events = [read_events(tmp_path / name).Scalars("train/loss") for name in ("eager", "compiled")]
    # step 0 (before any update), then Lightning's logging steps every 5 of 20: 4, 9, 14, 19
    assert [e.step for e in events[0]] == [e.step for e in events[1]] == [0, 4, 9, 14, 19]
    assert [e.value for e in events[1]] == pytest.approx([e.value for e in events[0]], rel=1e-4)


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


# compile=auto is eager on this machine (namegen.module.COMPILE_AUTO: the benchmark measured compiling slower)
@pytest.mark.parametrize(("overrides", "compiles"), [([], False), (["experiment=makemore", "data.path=x"], False),
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
