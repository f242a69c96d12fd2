"""The end-of-run diagnosis on real short runs: each recipe the lesson warns about gets its finding and a fix that
fits the run, a healthy one none, and `namegen diagnose --fix [--run]` repairs a naive run."""

import json
import math
import shlex
import subprocess
import sys

import pytest
import yaml
from omegaconf import OmegaConf

from conftest import REPO, make_cfg, namegen, read_events
from namegen.cli import main
from namegen.training import train

EVERY = ["callbacks.diagnostics.every_n_steps=50", "trainer.log_every_n_steps=50"]
NO_FIGURES = ["~callbacks.diagnostics.probes.figures", "callbacks.diagnostics.figures_every_n_steps=null"]
SHORT = ["trainer.max_steps=300", "trainer.val_check_interval=300", "trainer.num_sanity_val_steps=0",
         *EVERY, *NO_FIGURES]


def run(run_dir, *overrides):
    result = train(make_cfg(run_dir, *SHORT, *overrides))
    return result, json.loads((run_dir / "diagnosis.json").read_text())


def remedies(diagnosis):
    return [o for f in diagnosis["findings"] for o in f["remedy"]["overrides"]] + diagnosis["fix"]


def in_effect(run_dir, overrides):
    """The overrides whose value the run's config record already holds (read here with plain YAML)."""
    record = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
    out = []
    for override in overrides:
        key, text = override.split("=", 1)
        node = record
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        value = yaml.safe_load(text)
        if node == value or (isinstance(node, (int, float)) and isinstance(value, (int, float))
                             and math.isclose(node, value)):
            out.append(override)
    return out


@pytest.mark.parametrize("overrides,expected", [
    (["optim.optimizer.lr=1e-6"], "lr_too_low"),
    (["model.activation=relu", "init=naive", "norm=none"], "dead_units"),
    (["norm=none", "model.depth=12", "init.gain=0.5"], "vanishing_gradients"),
    (["norm=none", "model.depth=12", "init.gain=3"], "exploding_gradients"),
])
def test_each_bad_recipe_gets_its_finding_and_a_remedy_not_in_effect(tmp_path, overrides, expected):
    result, diagnosis = run(tmp_path, *overrides)
    assert expected in result["health"].split(",")
    assert remedies(diagnosis) and in_effect(tmp_path, remedies(diagnosis)) == []


def test_lr_30_with_batchnorm_is_too_high_and_never_told_to_raise_it(tmp_path):
    # BatchNorm makes the weights before it scale-invariant: a too-high lr grows them, so their update ratios
    # fall; the old rule read that as "too low" and said to raise the lr to ~7e+04
    result, diagnosis = run(tmp_path, "init=kaiming", "norm=batchnorm", "optim.optimizer.lr=30")
    names = result["health"].split(",")
    assert "lr_too_high" in names and "lr_too_low" not in names
    assert "lr_too_low" not in [n["name"] for n in diagnosis["notes"]]
    lrs = [float(o.split("=", 1)[1]) for o in remedies(diagnosis) if o.startswith("optim.optimizer.lr=")]
    assert lrs and all(lr < 30 for lr in lrs)
    assert in_effect(tmp_path, remedies(diagnosis)) == []  # not init=kaiming, not norm=batchnorm: both in effect


def test_the_naive_transformer_is_flagged_and_never_told_batchnorm(tmp_path):
    steps = ["trainer.max_steps=20", "trainer.val_check_interval=20", "trainer.num_sanity_val_steps=0",
             *NO_FIGURES, *[e.replace("=50", "=10") for e in EVERY]]
    result = train(make_cfg(tmp_path, "model=transformer", "init=naive", "norm=layernorm", "optim=adamw_cosine",
                            "callbacks=transformer", *steps))
    diagnosis = json.loads((tmp_path / "diagnosis.json").read_text())
    names = result["health"].split(",")
    assert {"saturated", "attention"} <= set(names)
    saturated = next(f for f in diagnosis["findings"] if f["name"] == "saturated")
    assert "(GELU/SiLU/ELU/Mish)" in saturated["healthy"] and 0 in saturated["steps"]
    assert not any("batchnorm" in o for o in remedies(diagnosis))
    assert in_effect(tmp_path, remedies(diagnosis)) == [] and "init.scheme=kaiming" in diagnosis["fix"]


def test_callbacks_minimal_is_not_called_healthy(trained_run):
    result = json.loads((trained_run / "result.json").read_text())  # callbacks=minimal, 300 steps
    assert result["health"] == "healthy (2 of 6 rules: no activation statistics, gradient statistics, update ratios)"


def test_a_healthy_run_is_healthy_and_diagnose_prints_it(tmp_path, capsys):
    result, diagnosis = run(tmp_path, "init=kaiming", "norm=batchnorm")
    assert result["health"] == "healthy" and diagnosis["findings"] == [] and diagnosis["fix"] == []
    capsys.readouterr()
    assert main(["diagnose", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"# Diagnosis: {tmp_path.name}\n\n**Health: healthy**\n")
    assert ("Checked: diverged, confident_start, saturated, dead_units, gradients, learning_rate; not applicable "
            "to this model: attention.") in printed


def test_the_naive_run_is_diagnosed_in_every_place_a_user_looks_and_fix_repairs_it(tmp_path, capsys):
    run_dir = tmp_path / "naive_none"
    result, _ = run(run_dir, "init=naive", "norm=none")
    assert {"confident_start", "saturated"} <= set(result["health"].split(","))
    printed = capsys.readouterr().out  # printed at the end of the run
    ratio = result["init_loss"] / math.log(27)  # the module's own step-0 loss, over log V
    assert f"init/loss {result['init_loss']:.3g} = {ratio:.1f} x log(V)" in printed
    # the Text tab: one card, at the run's last step (299), with the health first
    (event,) = read_events(run_dir).Tensors("diagnosis/text_summary")
    card = event.tensor_proto.string_val[0].decode()
    assert event.step == 299 and card.startswith(f"UNHEALTHY · **naive_none: {result['health']}**")

    assert main(["diagnose", str(run_dir), "--fix"]) == 0
    command = capsys.readouterr().out.strip()
    argv = shlex.split(command)
    # the run's own overrides but init=naive: kaiming is conf/'s default, so the command needs no init choice
    assert argv[:2] == ["python", "train.py"] and "norm=none" in argv and "init=naive" not in argv
    assert argv[-1] == f"hydra.run.dir={run_dir}-fix"
    done = subprocess.run([sys.executable, *argv[1:]], cwd=REPO, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-2000:]
    fixed = json.loads((tmp_path / "naive_none-fix" / "result.json").read_text())
    assert fixed["health"] == "healthy" and fixed["val_loss"] < result["val_loss"]
    # the command reproduces the run but for the fix: the same config record, init.scheme aside
    before = OmegaConf.to_container(OmegaConf.load(run_dir / ".hydra" / "config.yaml"))
    after = OmegaConf.to_container(OmegaConf.load(tmp_path / "naive_none-fix" / ".hydra" / "config.yaml"))
    before["init"]["scheme"] = "kaiming"
    assert {k: v for k, v in after.items() if k != "run_dir"} == {k: v for k, v in before.items() if k != "run_dir"}


def test_fix_run_trains_into_a_fresh_sibling_and_shows_before_and_after(tmp_path):
    run_dir = tmp_path / "naive"
    first, _ = run(run_dir, "init=naive", "norm=none")
    (tmp_path / "naive-fix").mkdir()  # taken: the fix goes next to it, never into it
    done = namegen("diagnose", str(run_dir), "--fix", "--run", timeout=400)
    assert done.returncode == 0, done.stderr[-2000:]
    fixed = json.loads((tmp_path / "naive-fix2" / "result.json").read_text())
    assert not any((tmp_path / "naive-fix").iterdir())
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:4]] for line in done.stdout.splitlines()
            if line.startswith("| ") and not line.startswith("| |")}
    assert rows["run"] == ["naive", "naive-fix2"]
    assert rows["val loss"] == [f"{first['val_loss']:.4f}", f"{fixed['val_loss']:.4f}"]
    assert fixed["val_loss"] < first["val_loss"] and rows["health"] == [first["health"], "healthy"]
