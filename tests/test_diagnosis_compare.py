"""Why a sweep's run is behind (diagnosis.compare): on the default 2x2 sweep's own scalars (20k steps, read back from
its event files into tests/data/sweep_2x2_20k.json: the first and last activation, gradient and norm readings, every
fourth update ratio), on hand-made sweeps, and where a user reads it (summary.md, namegen diagnose SWEEP)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from conftest import make_cfg
from namegen.diagnosis import diagnose, report_text
from namegen.diagnosis.compare import Sweep, why
from namegen.diagnosis.config import RunConfig
from test_diagnosis import healthy, write_events

GRID = json.loads((Path(__file__).parent / "data" / "sweep_2x2_20k.json").read_text())


def overrides(name: str) -> list[str]:
    return name.split(",")  # init=naive,norm=batchnorm -> the sweep's own overrides


@pytest.fixture(scope="module")
def grid() -> list[Sweep]:
    return [Sweep(name, run["result"], {k: [tuple(p) for p in v] for k, v in run["scalars"].items()},
                  RunConfig(make_cfg(Path("unused"), *overrides(name))), run["result"]["health"])
            for name, run in GRID.items()]


def median_ratio(name: str) -> float:
    s = GRID[name]["scalars"]
    return float(np.median([np.median([v for st, v in s[t] if st > 0]) for t in s if t.startswith("update_ratio/")]))


def test_the_lesson_s_grid_explained_naive_batchnorm_has_20x_smaller_updates(grid):
    lines = why(grid)
    # behind the best (kaiming,batchnorm 1.9905): naive,batchnorm by 0.10 and naive,none; kaiming,none (1.9933) not
    assert set(lines) == {"init=naive,norm=batchnorm", "init=naive,norm=none"}
    line = lines["init=naive,norm=batchnorm"]
    factor = 10 ** (median_ratio("init=kaiming,norm=batchnorm") - median_ratio("init=naive,norm=batchnorm"))
    assert 15 < factor < 25  # the lesson's update:data plot: -3.7 against -2.4
    assert line.startswith("why init=naive,norm=batchnorm is 0.102 behind init=kaiming,norm=batchnorm "
                           "(val 2.0923 vs 1.9905): ")
    assert f"updates ~{factor:.0f}x smaller than init=kaiming,norm=batchnorm's" in line
    assert "BatchNorm divides each update by the naive weights' scale" in line
    assert "it differs in init.scheme=naive (the best: kaiming)" in line and line.endswith(
        "try init.scheme=kaiming, or a higher lr")
    naive = lines["init=naive,norm=none"]
    assert "confidently wrong at the start" in naive and "higher lr" not in naive  # not an update-size story
    assert "init.scheme=kaiming" in naive and "model.norm=batchnorm" in naive


def test_a_run_behind_a_best_without_a_norm_is_never_told_to_drop_its_norm(grid):
    """Short runs can make kaiming,none the best: naive,batchnorm then differs in init and norm, and taking its
    BatchNorm away would leave naive init unrescued. The fix keeps the norm: init, or the lr."""
    lines = why([r for r in grid if r.name != "init=kaiming,norm=batchnorm"])
    line = lines["init=naive,norm=batchnorm"]
    assert "behind init=kaiming,norm=none" in line and "model.norm=batchnorm (the best: none)" in line
    assert line.endswith("try init.scheme=kaiming, or a higher lr")


def test_per_run_naive_batchnorm_gets_a_note_and_the_other_verdicts_stay(grid):
    for run in grid:
        d = diagnose(run.scalars, {**run.result, "health": None}, config=run.config)
        assert d.health == run.result["health"], run.name  # the verdicts the sweep's runs were given
        small = [n for n in d.notes if n.name == "small_updates"]
        assert bool(small) == (run.name == "init=naive,norm=batchnorm"), run.name
    note = next(n for n in diagnose(grid[2].scalars, grid[2].result, config=grid[2].config).notes
                if n.name == "small_updates")
    assert "-3.70" in note.measured and "init.scheme=kaiming" in note.why and "higher lr" in note.why


def sweep_of(vals: dict[str, float | None], health: dict[str, str] | None = None) -> list[Sweep]:
    return [Sweep(name, {"val_loss": v, "status": "ok" if v is not None else "diverged"}, healthy(), None,
                  (health or {}).get(name, "healthy")) for name, v in vals.items()]


def test_runs_within_the_healthy_spread_are_not_behind():
    assert why(sweep_of({"a": 2.00, "b": 2.01, "c": 2.015})) == {}  # within 1% of the best
    # healthy runs spread over 2.00-2.05: each within 3x the others' spread (median absolute deviation 0.02)
    assert why(sweep_of({"a": 2.00, "b": 2.04, "c": 2.00, "d": 2.04, "e": 2.05})) == {}
    assert set(why(sweep_of({"a": 2.00, "b": 2.04, "c": 2.00, "d": 2.04, "e": 2.07}))) == {"e"}
    lines = why(sweep_of({"a": 2.00, "b": 2.001, "c": 2.002, "d": 2.10, "e": None}))
    assert set(lines) == {"d", "e"} and "e is behind a (diverged)" in lines["e"]
    assert "no logged statistic differs clearly" in lines["d"]  # same scalars: nothing to blame, said so
    assert why(sweep_of({"a": 2.0})) == {}


def record(run_dir: Path, *overrides_: str) -> None:
    (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
    cfg = make_cfg(Path("unused"), *overrides_)
    cfg.run_dir = str(run_dir)
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")


def test_the_why_line_is_in_summary_md_and_namegen_diagnose_sweep(tmp_path):
    from namegen.sweep import write_summary

    sweep = tmp_path / "sweep"
    for name, val in (("init=kaiming", 1.99), ("init=naive", 2.09)):
        s = healthy()
        if name == "init=naive":  # 20x smaller updates, behind norms whose inputs stay ~6x unit scale
            s = {k: ([(st, v - 1.3) for st, v in series] if k.startswith("update_ratio/") else series)
                 for k, series in s.items()}
            s.update({f"norm/{i:02d}.model.hidden.{i}.norm/in_std": [(0, 6.0), (1499, 6.5)] for i in range(5)})
        else:
            s.update({f"norm/{i:02d}.model.hidden.{i}.norm/in_std": [(0, 1.0), (1499, 1.5)] for i in range(5)})
        write_events(sweep / name, s)
        record(sweep / name, f"init={name.split('=')[1]}", "norm=batchnorm")
        (sweep / name / "result.json").write_text(json.dumps({"status": "ok", "val_loss": val, "health": "healthy"}))
    text = report_text(sweep)
    line = ("why init=naive is 0.100 behind init=kaiming (val 2.0900 vs 1.9900): updates ~20x smaller than "
            "init=kaiming's (median log10 ratio -4.3 vs -3.0): BatchNorm divides each update by the naive weights' "
            "scale")
    assert "## Why runs are behind" in text and line in text
    write_summary(sweep)
    summary = (sweep / "summary.md").read_text()
    assert f"- {line}" in summary and summary.rstrip().endswith("try init.scheme=kaiming, or a higher lr")
