"""The end-of-run diagnosis on real short runs: each recipe the lesson warns about gets its finding, a healthy one none."""

import json

import pytest

from conftest import make_cfg
from namegen.cli import main
from namegen.training import train

SHORT = ["trainer.max_steps=300", "trainer.val_check_interval=300", "trainer.num_sanity_val_steps=0",
         "callbacks.diagnostics.every_n_steps=50", "trainer.log_every_n_steps=50",
         "~callbacks.diagnostics.probes.figures", "callbacks.diagnostics.figures_every_n_steps=null"]


def health(run_dir, *overrides):
    result = train(make_cfg(run_dir, *SHORT, *overrides))
    return result["health"].split(",")


@pytest.mark.parametrize("overrides,expected", [
    (["optim.optimizer.lr=20"], "lr_too_high"),
    (["optim.optimizer.lr=1e-6"], "lr_too_low"),
    (["model.activation=relu", "init=naive", "norm=none"], "dead_units"),
    (["norm=none", "model.depth=12", "init.gain=0.5"], "vanishing_gradients"),
    (["norm=none", "model.depth=12", "init.gain=3"], "exploding_gradients"),
])
def test_each_bad_recipe_gets_its_finding(tmp_path, overrides, expected):
    assert expected in health(tmp_path, *overrides)


def test_a_healthy_run_is_healthy_and_diagnose_prints_what_training_wrote(tmp_path, capsys):
    assert health(tmp_path, "init=kaiming", "norm=batchnorm") == ["healthy"]
    capsys.readouterr()
    assert main(["diagnose", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == (tmp_path / "diagnosis.md").read_text().strip()
    assert json.loads((tmp_path / "diagnosis.json").read_text())["findings"] == []


def test_the_naive_run_is_diagnosed_in_every_place_a_user_looks(tmp_path, capsys):
    names = health(tmp_path, "init=naive", "norm=none")
    assert {"confident_start", "saturated"} <= set(names)
    printed = capsys.readouterr().out  # printed at the end of the run
    assert "confident_start" in printed and "model.hidden.0.act" in printed
    from conftest import read_events

    text = read_events(tmp_path).Tensors("diagnosis/text_summary")[0].tensor_proto.string_val[0].decode()  # Text tab
    assert "confident_start" in text
    assert main(["diagnose", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == (tmp_path / "diagnosis.md").read_text().strip()
