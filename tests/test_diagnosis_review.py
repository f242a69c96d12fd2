"""Issue 27's review bugs, each on the smallest input that shows it: a remedy validated on the rerun it would be,
harm settled to a fixed point, schedule phases by the schedule's shape, a sigmoid judged as bounded."""

from __future__ import annotations

import math
from pathlib import Path

from omegaconf import OmegaConf

from conftest import make_cfg
from namegen.diagnosis import diagnose, lr_phases
from namegen.diagnosis.config import RunConfig
from test_diagnosis import act, const, healthy, names, weight

HYDRA_RUN_DIR = "${hydra:runtime.output_dir}"  # what train.py's record holds: Hydra resolves it, nothing else can


def finished_run(folder: Path, *overrides: str) -> Path:
    """A run folder as train.py leaves it: a config record whose run_dir is Hydra's interpolation, and a result."""
    cfg = make_cfg(folder, *overrides)
    cfg.run_dir = HYDRA_RUN_DIR
    (folder / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, folder / ".hydra" / "config.yaml")
    (folder / "result.json").write_text('{"status": "ok"}')
    return folder


def test_a_remedy_is_validated_on_the_rerun_not_judged_by_the_model_alone(tmp_path):
    config = RunConfig.of_run(finished_run(tmp_path / "run", "init=kaiming", "norm=batchnorm"))
    # an lr torch refuses: the model builds, so a model-only check (the old fallback) let it through
    refusal = config.refusal(["optim.optimizer.lr=-1"])
    assert refusal is not None and "optim.optimizer" in refusal and "-1" in refusal
    assert config.refusal(["optim.optimizer.lr=0.05"]) is None  # the rerun in a fresh folder validates
    assert config.refusal(["model.depth=0"]) is not None
    # where the rerun writes: a fresh sibling, never the finished run's folder
    assert Path(config.rerun([]).run_dir) == tmp_path / "run-fix" and config.rerun([]).resume is False


def test_harm_spreads_to_a_fixed_point_whatever_the_rules_order():
    # a diverged run with large steps (no spike: the loss went to nan) and saturation that grew during training:
    # lr_too_high hurts with the divergence, and the saturation hurts with lr_too_high. Settled in one pass over the
    # rules' order (saturated before learning_rate), the saturation stayed a note that said "it kept learning".
    s = healthy()
    for j in range(7):
        s[f"update_ratio/{j:02d}.{weight(j)}"] = const(-1.0)
    s[f"{act(2)}/saturation"] = [(0, 0.05), (500, 0.2), (1000, 0.5), (1499, 0.9)]
    d = diagnose(s, {"status": "diverged", "error": "loss is nan at step 1499"})
    assert {"diverged", "lr_too_high", "saturated"} <= set(names(d))
    assert not any("kept learning" in n.why for n in d.notes) and "saturated" not in [n.name for n in d.notes]
    assert "together with lr_too_high" in next(f.why for f in d.findings if f.name == "saturated")


def cosine(peak: float, steps: int, every: int) -> list[tuple[int, float]]:
    return [(s, peak * (1 + math.cos(math.pi * s / steps)) / 2) for s in range(0, steps + 1, every)]


def test_a_cosine_schedule_has_a_phase_per_halving_not_per_logged_point():
    lr = cosine(2e-3, 3000, 100)  # 31 logged points, every one a different lr
    phases = lr_phases({"lr-AdamW": lr})
    # the first phase runs until the lr first falls to half its peak: computed here from the points themselves
    half = next(s for s, v in lr if v <= 1e-3 * (1 + 1e-6))
    assert (phases[0].start, phases[0].end) == (0, half) and phases[0].peak
    for p, q in zip(phases, phases[1:]):  # every phase's lr stays within a factor of 2 of its first value
        inside = [v for s, v in lr if p.start <= s < q.start]
        assert len(inside) >= 1 and max(inside) / min(inside) < 2
    assert len(phases) <= 12 < len(lr)  # the old rule made 31 phases, one reading each
    early = [p for p in phases if p.level >= 0.25]
    assert all(sum(p.start <= s < (p.end or 10**9) for s, _ in lr) >= 3 for p in early)


def test_a_sigmoid_layer_is_bounded_not_far_tail():
    # someone else's module (no activation types known): a sigmoid's outputs, mean 0.5, std 0.21 at step 0 (unit
    # input scale), 20% flat (|2s - 1| > 0.97) at the end. A sigmoid's healthy bound is 30%: 20% is fine; read as
    # far-tail (GELU, 15%) it was called saturated.
    s = healthy()
    s[f"{act(1)}/mean"] = const(0.5)
    s[f"{act(1)}/std"] = const(0.21)
    s[f"{act(1)}/saturation"] = [(0, 0.01), (500, 0.1), (1000, 0.15), (1499, 0.2)]
    s[f"{act(1)}/dead"] = const(0.0)
    d = diagnose(s)
    assert "saturated" not in names(d) + [n.name for n in d.notes]
    s[f"{act(1)}/saturation"] = [(0, 0.4), (1499, 0.4)]  # above a bounded unit's 30% at step 0: the lesson's case
    assert "saturated" in names(diagnose(s))
    # a ReLU's outputs (mean/std 0.68, 50% flat) are still one-sided, a GELU's (0.48, 3% flat) far-tail
    s = healthy()
    s.update({f"{act(1)}/mean": const(0.4), f"{act(1)}/std": const(0.58), f"{act(1)}/saturation": const(0.5)})
    assert diagnose(s).findings == ()
    s.update({f"{act(1)}/mean": const(0.28), f"{act(1)}/std": const(0.59), f"{act(1)}/saturation": const(0.03)})
    s[f"{act(1)}/saturation"] = [(0, 0.03), (1499, 0.2)]
    s[f"{act(1)}/dead"] = [(0, 0.0), (1499, 0.2)]
    assert "saturated" in names(diagnose(s))  # 20% > a far-tail unit's 15%, with dead units: a finding


# -- the loss rules on any module (issue 26 item 8): namegen's tags first, Diagnostics' otherwise -------------------


def any_module(init: float, end: float, uniform: float | None = math.log(27)) -> dict:
    """Someone else's module: no train/loss, init/*; Diagnostics' loss from step 0 on, and log(output width)."""
    s = {k: v for k, v in healthy().items() if not k.startswith(("train/", "init/"))}
    s["diagnostics/loss"] = [(0, init), (500, (init + end) / 2), (1000, end), (1499, end)]
    if uniform is not None:
        s["diagnostics/uniform_loss"] = [(0, uniform)]
    return s


def test_the_loss_rules_read_diagnostics_loss_tags_on_any_module():
    d = diagnose(any_module(init=20.0, end=2.3))
    assert "confident_start" in names(d) and {"confident_start", "loss_rise"} <= set(d.checked)
    f = next(f for f in d.findings if f.name == "confident_start")
    assert f"{20 / math.log(27):.1f} x log(V)" in f.measured
    d = diagnose(any_module(init=3.3, end=8.0))  # a healthy start, then worse: the last three (5.65, 8, 8) 2.2x
    assert names(d) == ["lr_too_high"]
    assert "diagnostics/loss 7.22 over steps 500-1499 = 2.2 x the step-0 loss 3.3" in d.findings[0].measured
    assert diagnose(any_module(init=3.3, end=2.3)).findings == ()


def test_namegen_s_own_loss_tags_win_where_both_are_logged():
    s = any_module(init=20.0, end=8.0)
    s.update({"init/loss": [(0, 3.3)], "init/uniform_loss": [(0, math.log(27))], "train/loss": const(2.3)})
    assert diagnose(s).findings == ()  # namegen's: a healthy start that learned; Diagnostics' alone would say both


def test_the_coverage_line_names_exactly_the_loss_that_is_missing():
    d = diagnose(any_module(init=3.3, end=2.3, uniform=None))  # the loss, but no log(output width)
    assert ("confident_start", "log(output width) (init/uniform_loss or diagnostics/uniform_loss)") in d.missing
    assert "loss_rise" in d.checked and "diverged" in d.checked
    s = any_module(init=3.3, end=2.3)
    s["diagnostics/loss"] = s["diagnostics/loss"][1:]  # no step-0 reading
    d = diagnose(s)
    assert dict(d.missing) == {"confident_start": "step-0 loss (init/loss, or diagnostics/loss at step 0)",
                               "loss_rise": "step-0 loss (init/loss, or diagnostics/loss at step 0)"}
