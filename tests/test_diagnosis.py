"""The end-of-run diagnosis: each rule on hand-built scalars (and on the real scalars of a 20k-step run), harm vs
notes, coverage, remedies computed from a real composed config, thresholds, lr phases, layer order, files, paths."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from namegen.diagnosis import (
    RULE_NAMES,
    Diagnosis,
    Thresholds,
    diagnose,
    diagnose_path,
    diagnose_run,
    lr_phases,
    report_text,
    write_diagnosis,
)

MLP_RULES = tuple(r for r in RULE_NAMES if r != "attention")  # an MLP has no attention to judge
from functools import cache

from conftest import make_cfg
import namegen.resolvers  # noqa: F401  a composed config's interpolations use them
from namegen.diagnosis.config import RunConfig, parse
from namegen.errors import ConfigError, UserError

STEPS = (0, 500, 1000, 1499)
LOG_V = math.log(27)


def act(i: int) -> str:
    return f"act/{i:02d}.model.hidden.{i}.act"


def grad(i: int) -> str:
    return f"grad/{i:02d}.model.hidden.{i}.act"


def weight(j: int) -> str:
    names = ["model.wte.weight"] + [f"model.hidden.{k}.linear.weight" for k in range(5)] + ["model.head.weight"]
    return names[j] if j < len(names) else f"model.extra.{j}.weight"


def const(value: float, steps=STEPS) -> list[tuple[int, float]]:
    return [(s, value) for s in steps]


def healthy(depth: int = 5, n_weights: int = 7, steps=STEPS) -> dict:
    """A kaiming-like tanh net: loss starts at log(V), ~5% saturation, level gradients, update ratios ~-3."""
    s = {"init/loss": [(0, 3.32)], "init/uniform_loss": [(0, LOG_V)], "train/loss": const(2.3, steps),
         "val/loss": [(steps[-1], 2.2)], "lr-SGD": const(0.1, steps)}
    for i in range(depth):
        s.update({f"{act(i)}/mean": const(0.01, steps), f"{act(i)}/std": const(0.65, steps),
                  f"{act(i)}/saturation": const(0.05, steps), f"{act(i)}/dead": const(0.0, steps),
                  f"{grad(i)}/mean": const(0.0, steps), f"{grad(i)}/std": const(1e-3, steps)})
    for j in range(n_weights):
        s[f"update_ratio/{j:02d}.{weight(j)}"] = const(-3.0, steps)
        s[f"grad_data_ratio/{j:02d}.{weight(j)}"] = const(1e-3, steps)
    return s


def names(d: Diagnosis) -> list[str]:
    return [f.name for f in d.findings]


def only(d: Diagnosis, name: str):
    (f,) = [f for f in d.findings if f.name == name]
    return f


# -- healthy, unknown, coverage ----------------------------------------------------------------------------------


def test_a_healthy_run_has_no_findings_and_every_rule_checked():
    d = diagnose(healthy(), {"status": "ok"})
    assert d.findings == () and d.notes == ()
    assert d.health == "healthy" and d.healthy
    assert d.checked == MLP_RULES and d.missing == () and d.not_applicable == ("attention",)
    assert "**Health: healthy**" in d.to_markdown("run") and "No findings." in d.to_markdown("run")


def test_nothing_logged_is_unknown_not_healthy():
    d = diagnose({})
    assert d.findings == () and d.checked == () and d.health == "unknown" and not d.healthy
    assert ("not checked: diverged (no training loss (train/loss or diagnostics/loss) or run status), confident_start "
            "(no step-0 loss (init/loss, or diagnostics/loss at step 0), log(output width) (init/uniform_loss or "
            "diagnostics/uniform_loss))") in d.to_markdown()


def test_without_activation_statistics_the_run_is_not_called_healthy():
    # what callbacks=minimal logs: the step-0 loss, train/loss and the lr; 3 of the MLP's 7 rules can run
    s = {k: v for k, v in healthy().items() if k.split("/")[0] in ("init", "train", "val", "lr-SGD")}
    d = diagnose(s, {"status": "ok"})
    assert d.health == "healthy (3 of 7 rules: no activation statistics, gradient statistics, update ratios)"
    assert not d.healthy and d.checked == ("diverged", "confident_start", "loss_rise")
    assert "not checked: saturated (no activation statistics)" in d.to_markdown()


def test_health_joins_the_findings_short_names_in_rule_order():
    s = healthy()
    s["init/loss"] = [(0, 20.0)]
    s[f"{act(2)}/saturation"] = const(0.9)
    s[f"{act(2)}/dead"] = const(0.3)
    d = diagnose(s, {"status": "diverged", "error": "loss is nan at step 1499"})
    assert d.health == "diverged,confident_start,saturated,dead_units"


# -- confident_start ----------------------------------------------------------------------------------------------


def test_confident_start_fires_far_above_log_v_and_names_the_output_layer():
    s = healthy()
    s["init/loss"] = [(0, 20.0)]
    f = only(diagnose(s), "confident_start")
    assert f.layers == ("model.head",) and f.steps == (0,)
    assert "20" in f.measured and f"{20 / LOG_V:.1f} x log(V)" in f.measured and f"{1.5 * LOG_V:.3g}" in f.healthy
    assert "gain/sqrt(fan_in)" in f.remedy.text and f.remedy.overrides == ()  # no config: words only


def test_confident_start_silent_near_log_v_and_honours_its_threshold():
    s = healthy()
    s["init/loss"] = [(0, 4.5)]  # 1.36 x log(V)
    assert "confident_start" not in names(diagnose(s))
    assert "confident_start" in names(diagnose(s, thresholds=Thresholds(init_loss_ratio=1.2)))
    s["init/loss"] = [(0, 20.0)]
    assert "confident_start" not in names(diagnose(s, thresholds=Thresholds(init_loss_ratio=7)))


def test_confident_start_falls_back_to_result_json():
    d = diagnose({}, {"init_loss": 19.0, "uniform_loss": LOG_V})
    assert names(d) == ["confident_start"] and d.checked == ("confident_start",)
    assert diagnose({}, {"init_loss": 3.3, "uniform_loss": LOG_V}).findings == ()


# -- saturated: per activation kind, harm at step 0, a note when it only grew -----------------------------------


def test_saturated_at_step_0_is_a_finding_naming_layers_steps_and_values():
    s = healthy()
    s[f"{act(0)}/saturation"] = [(0, 0.84), (500, 0.5), (1000, 0.3), (1499, 0.1)]
    f = only(diagnose(s), "saturated")
    assert f.layers == ("model.hidden.0.act",) and f.steps == (0,)
    assert "model.hidden.0.act 84.0% at step 0" in f.measured and "30.0% (tanh/sigmoid)" in f.healthy
    assert "step 0" in f.why


def test_saturation_that_only_grew_while_the_net_learned_is_a_note():
    s = healthy()
    s[f"{act(3)}/saturation"] = [(0, 0.1), (500, 0.2), (1000, 0.4), (1499, 0.45)]
    d = diagnose(s)
    assert d.findings == () and d.health == "healthy"
    (note,) = d.notes
    assert note.name == "saturated" and note.note and "45.0% at step 1499" in note.measured
    # with dead units in the same run it hurt: a finding
    s[f"{act(3)}/dead"] = [(0, 0.0), (500, 0.0), (1000, 0.2), (1499, 0.3)]
    d = diagnose(s)
    assert names(d) == ["saturated", "dead_units"] and "together with dead_units" in only(d, "saturated").why


def test_the_real_kaiming_none_run_after_20k_steps_is_not_unhealthy():
    """`python train.py init=kaiming norm=none`, the README's first sweep's run (20k steps): it ends at val 1.993,
    within 0.01 of BatchNorm's. Its tanh layers end 35-38% saturated, above the 30% threshold, yet no unit died and
    the gradient stayed level: drift, not harm. The scalars are the run's own, read from its event files."""
    data = json.loads((Path(__file__).parent / "data" / "kaiming_none_20k.json").read_text())
    scalars = {tag: [tuple(p) for p in series] for tag, series in data["scalars"].items()}
    d = diagnose(scalars, data["result"])
    assert d.health == "healthy" and d.findings == ()
    (note,) = d.notes
    assert note.name == "saturated" and note.steps == (19999,)
    assert max(v for e in note.evidence for v in [e["value"]]) > 0.30  # above the threshold: seen, kept as a note
    md = d.to_markdown("init=kaiming,norm=none")
    assert md.index("## Notes") > md.index("**Health: healthy**") and "saturated" not in md.split("## Notes")[0]


def test_relu_layers_have_their_own_saturation_threshold():
    s = healthy()
    for i in range(5):  # a healthy ReLU: flat for half its inputs, mean/std ~ 0.68
        s[f"{act(i)}/mean"], s[f"{act(i)}/std"], s[f"{act(i)}/saturation"] = const(0.4), const(0.58), const(0.5)
    assert names(diagnose(s)) == []
    s[f"{act(4)}/saturation"] = const(0.9)
    f = only(diagnose(s), "saturated")
    assert f.layers == ("model.hidden.4.act",) and "75.0% (ReLU)" in f.healthy
    # the declared type overrides the guess from the outputs: as tanh layers, 50% is saturated
    tanh = {f"model.hidden.{i}.act": "Tanh" for i in range(5)}
    assert len(only(diagnose(s, activations=tanh), "saturated").layers) == 5
    assert len(only(diagnose(s, {"activations": tanh}), "saturated").layers) == 5


def test_gelu_is_judged_by_its_far_tail():
    # GELU is flat only below -3: a healthy layer (kaiming + LayerNorm) is 2-4% there, a naive Transformer's 33-50%
    s = healthy()
    gelu = {f"model.hidden.{i}.act": "GELU" for i in range(5)}
    for i in range(5):
        s[f"{act(i)}/saturation"] = const(0.035)
    assert names(diagnose(s, activations=gelu)) == []
    s[f"{act(1)}/saturation"] = const(0.35)
    f = only(diagnose(s, activations=gelu), "saturated")
    assert f.layers == ("model.hidden.1.act",) and "(GELU/SiLU/ELU/Mish)" in f.healthy
    assert names(diagnose(s, activations={**gelu, "model.hidden.1.act": "ReLU"})) == []  # 35% is fine for a ReLU


def test_leaky_relu_has_no_dead_units_and_no_saturation():
    s = healthy()
    s[f"{act(2)}/saturation"] = const(0.98)
    s[f"{act(2)}/dead"] = const(0.6)  # every input negative: the slope still passes the gradient back
    leaky = {f"model.hidden.{i}.act": "LeakyReLU" for i in range(5)}
    d = diagnose(s, activations=leaky)
    assert d.findings == () and d.notes == () and "dead_units" in d.checked
    relu = {f"model.hidden.{i}.act": "torch.nn.ReLU" for i in range(5)}
    assert "dead_units" in names(diagnose(s, activations=relu))


# -- dead units -------------------------------------------------------------------------------------------------


def test_dead_units_judged_at_the_end_with_since_when():
    s = healthy()
    s[f"{act(1)}/dead"] = [(0, 0.0), (500, 0.2), (1000, 0.3), (1499, 0.4)]
    s[f"{act(2)}/dead"] = [(0, 0.5), (500, 0.0), (1000, 0.0), (1499, 0.0)]  # recovered: not dead
    f = only(diagnose(s), "dead_units")
    assert f.layers == ("model.hidden.1.act",) and f.steps == (1499,)
    assert "40.0% of units dead at step 1499 (over 10.0% since step 500)" in f.measured
    assert "dead_units" not in names(diagnose(s, thresholds=Thresholds(dead=0.5)))


def test_a_value_at_the_threshold_read_back_as_float32_is_not_above_it():
    s = healthy()
    s[f"{act(1)}/dead"] = const(0.10000000149011612)  # 10 of 100 units, as an event file stores it
    s[f"{act(2)}/saturation"] = const(0.30000001192092896)
    assert diagnose(s).health == "healthy"


def test_non_finite_tail_values_are_skipped():
    s = healthy()
    s[f"{act(1)}/dead"] = [(0, 0.0), (500, 0.3), (1000, 0.3), (1499, math.nan)]
    assert only(diagnose(s), "dead_units").steps == (1000,)


# -- gradients -----------------------------------------------------------------------------------------------------


@cache
def mlp() -> RunConfig:
    """namegen's default MLP: a plain chain of layers, where the first/last gradient ratio is the layers' gain."""
    return RunConfig(make_cfg(Path("unused")))


def test_vanishing_gradients_with_the_trend_across_depth():
    s = healthy()
    for i, g in enumerate([1e-6, 1e-5, 1e-4, 5e-4, 1e-3]):
        s[f"{grad(i)}/std"] = [(0, g), (500, 1e-3), (1000, 1e-3), (1499, 1e-3)]
    d = diagnose(s, config=mlp())
    f = only(d, "vanishing_gradients")
    assert "exploding_gradients" not in names(d)
    assert f.layers == ("model.hidden.0.act", "model.hidden.4.act") and f.steps == (0,)
    assert "ratio 0.001" in f.measured and "at every layer toward the input" in f.measured
    assert "1/10 and 10" in f.healthy


def test_exploding_gradients_not_monotone_and_threshold():
    s = healthy()
    for i, g in enumerate([1.0, 0.01, 0.5, 0.2, 0.05]):
        s[f"{grad(i)}/std"] = const(g)
    f = only(diagnose(s, config=mlp()), "exploding_gradients")
    assert f.steps == (0, 1499) and "not monotonically" in f.measured and "ratio 20" in f.measured
    assert "gradients" not in diagnose(s, thresholds=Thresholds(gradient_ratio=50), config=mlp()).health


def test_level_gradients_are_fine_and_one_layer_is_not_checked():
    s = healthy()
    for i, g in enumerate([2e-3, 1.5e-3, 1e-3, 1e-3, 0.8e-3]):
        s[f"{grad(i)}/std"] = const(g)
    assert diagnose(s).health == "healthy"
    assert "gradients" not in diagnose(healthy(depth=1)).checked


def test_layers_sort_by_index_not_by_tag_text():
    # 12 layers, tags inserted in reverse, paths that sort backwards, and indices past 2 digits
    s = {}
    order = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 100]
    for k, i in reversed(list(enumerate(order))):
        path = f"{chr(ord('z') - k)}.act"
        s[f"grad/{i:02d}.{path}/std"] = [(0, 10.0 ** -(len(order) - 1 - k))]  # grows toward the output
    f = only(diagnose(s, config=mlp()), "vanishing_gradients")
    assert f.layers == ("z.act", f"{chr(ord('z') - 11)}.act")
    assert "at every layer toward the input" in f.measured


def test_a_gradient_spread_outside_a_known_chain_is_a_note_unless_another_harm_joins_it():
    """A healthy ResNet's skip connections grow the gradient toward the input, BERT's masked-LM head shrinks the
    last one: out of a plain chain the ratio is no per-layer gain. Alone, a note; beside a confident start, a finding."""
    s = healthy()
    for i, g in enumerate([1.0, 0.5, 0.2, 0.1, 0.01]):
        s[f"{grad(i)}/std"] = const(g)
    alone = diagnose(s)  # someone else's module: no config, shape unknown
    assert alone.health == "healthy" and "exploding_gradients" in [n.name for n in alone.notes]
    assert "exploding_gradients" in diagnose(s, config=mlp()).health.split(",")
    s["init/loss"] = [(0, 20.0)]
    assert {"confident_start", "exploding_gradients"} <= set(diagnose(s).health.split(","))


# -- learning rate ---------------------------------------------------------------------------------------------------


def test_phases_split_where_the_lr_changes():
    s = {"lr-SGD": [(0, 0.1), (500, 0.1), (1000, 0.01), (1499, 0.01)]}
    phases = lr_phases(s)
    assert [(p.start, p.end, p.lr, p.peak, round(p.level, 6)) for p in phases] == [
        (0, 1000, {"lr-SGD": 0.1}, True, 1.0), (1000, None, {"lr-SGD": 0.01}, False, 0.1)]
    assert [(p.start, p.end) for p in lr_phases({})] == [(0, None)]


def test_phases_with_several_param_groups():
    s = {"lr-AdamW/pg1": [(0, 1e-3), (100, 1e-3), (200, 1e-3)], "lr-AdamW/pg2": [(0, 1e-4), (100, 2e-4), (200, 2e-4)]}
    phases = lr_phases(s)
    assert [(p.start, p.end) for p in phases] == [(0, 100), (100, None)]
    assert phases[1].lr == {"lr-AdamW/pg1": 1e-3, "lr-AdamW/pg2": 2e-4} and phases[1].peak and not phases[0].peak


def test_momentum_and_weight_decay_tags_are_not_learning_rates():
    s = {"lr-SGD": const(0.1), "lr-SGD-momentum": [(0, 0.9), (500, 0.8)], "lr-SGD-weight_decay": [(0, 0), (500, 1)]}
    assert [(p.start, p.lr) for p in lr_phases(s)] == [(0, {"lr-SGD": 0.1})]


def spiky(s: dict) -> dict:
    s["train/loss"] = [(100, 2.8), (500, 2.4), (1000, 6.0), (1499, 2.5)]  # 6.0 after 2.4: a spike
    return s


def test_lr_too_high_in_one_phase_needs_a_loss_spike_to_count():
    s = healthy()
    s["lr-SGD"] = [(0, 1.0), (500, 1.0), (1000, 0.1), (1499, 0.1)]
    for j in range(7):
        s[f"update_ratio/{j:02d}.{weight(j)}"] = [(0, -3.0), (500, -1.2), (1000, -3.0), (1499, -3.1)]
    d = diagnose(s)  # the loss fell steadily: large steps, no harm
    assert d.findings == () and [n.name for n in d.notes] == ["lr_too_high"]
    d = diagnose(spiky(s))
    f = only(d, "lr_too_high")
    assert "lr_too_low" not in names(d) and "spiked" in f.why
    assert "steps 0-1000 (SGD 1): 7 of 7 weight matrices above -2" in f.measured
    assert "model.hidden.0.linear" in f.layers


def test_weights_feeding_a_norm_that_grow_are_lr_too_high_never_too_low():
    # BatchNorm + lr 30 (measured): the norms' inputs grow 25-10^6-fold, update ratios fall to -5..-10, loss spikes
    s = spiky(healthy())
    for j in range(7):
        s[f"update_ratio/{j:02d}.{weight(j)}"] = [(0, -0.6), (500, -0.6), (1000, -7.0), (1499, -9.0)]
    for i in range(5):
        s[f"norm/{i:02d}.model.hidden.{i}.norm/in_std"] = [(0, 1.1), (500, 40.0), (1000, 300.0), (1499, 500.0)]
    d = diagnose(s)
    assert "lr_too_high" in names(d) and "lr_too_low" not in names(d) + [n.name for n in d.notes]
    assert "the inputs of 5 of 5 norms grew" in only(d, "lr_too_high").measured
    for i in range(5):  # healthy BatchNorm: the inputs grow at most 2.3-fold, the first update near -3
        s[f"norm/{i:02d}.model.hidden.{i}.norm/in_std"] = [(0, 1.1), (500, 1.5), (1000, 2.0), (1499, 2.2)]
    for j in range(7):
        s[f"update_ratio/{j:02d}.{weight(j)}"] = [(0, -3.0), (500, -3.0), (1000, -3.2), (1499, -3.1)]
    assert "lr_too_high" not in names(diagnose(s))


def test_lr_too_high_needs_more_than_half_of_the_matrices():
    s = spiky(healthy())
    for j in range(3):  # 3 of 7
        s[f"update_ratio/{j:02d}.{weight(j)}"] = const(-1.0)
    assert "lr_too_high" not in names(diagnose(s))
    assert "lr_too_high" in names(diagnose(s, thresholds=Thresholds(update_ratio_share=0.4)))
    strict = Thresholds(update_ratio_high=-0.5, update_ratio_share=0.4)
    assert "lr_too_high" not in names(diagnose(s, thresholds=strict))


def rose(s: dict) -> dict:
    """SGD lr 5 without a norm (measured): a healthy step 0 (3.30), then the tanh units saturate and die and the loss
    ends far above its start (12-21 over the last logged steps)."""
    s["train/loss"] = [(100, 154.9), (500, 155.6), (1000, 20.7), (1499, 12.3)]
    return s


def test_a_loss_that_rose_above_a_healthy_start_is_lr_too_high():
    cfg = RunConfig(make_cfg(Path("unused"), "init=kaiming", "norm=none", "optim.optimizer.lr=5"))
    s = rose(healthy())  # update ratios ~-3 after step 0: the learning_rate rule alone sees nothing
    for j in range(7):  # the first update, on the healthy init: lr 5 = 50 x 0.1, so 1.7 decades above -3.24
        s[f"update_ratio/{j:02d}.{weight(j)}"][0] = (0, -1.54)
    f = only(diagnose(s, config=cfg), "lr_too_high")
    ratio = (20.7 + 12.3 + 155.6) / 3 / 3.32
    assert f.measured.startswith(f"train/loss {(20.7 + 12.3 + 155.6) / 3:.3g} over steps 500-1499 = {ratio:.1f} x")
    assert f.steps == (500, 1000, 1499)
    # lr 5 x 10^(-3 - -1.54) = 0.173, to one digit: 0.2, with the ambiguity said
    assert f.remedy.overrides == ("optim.optimizer.lr=0.2",) and "likelier cause than the init" in f.remedy.text
    # ... and lowered by any other finding's fix: it comes before a norm
    s[f"{act(0)}/dead"] = [(0, 0.0), (500, 0.5), (1000, 0.9), (1499, 1.0)]
    d = diagnose(s, config=cfg)
    assert d.fix[0] == "optim.optimizer.lr=0.2" and list(only(d, "dead_units").remedy.overrides) == d.fix[:1]
    # the threshold: 1.2 x the step-0 loss, a healthy run ends at 0.62-0.74 x
    assert "lr_too_high" not in names(diagnose(s, config=cfg, thresholds=Thresholds(loss_rise=60)))


def test_a_falling_loss_or_a_start_already_wrong_is_not_lr_too_high():
    assert diagnose(healthy()).findings == ()  # 2.3 at the end from 3.32 at step 0
    s = rose(healthy())
    s["train/loss"][-3:] = [(500, 3.9), (1000, 3.9), (1499, 3.9)]  # 1.17 x: within one batch's noise
    assert "lr_too_high" not in names(diagnose(s))
    s = rose(healthy())
    s["init/loss"] = [(0, 20.0)]  # a confident start: the init's doing, and the loss then fell from 20
    assert "lr_too_high" not in names(diagnose(s)) and "confident_start" in names(diagnose(s))
    s = rose(healthy())
    s[f"{act(0)}/saturation"] = [(0, 0.8)] + const(0.8, STEPS[1:])  # saturated before any update
    assert "lr_too_high" not in names(diagnose(s))


def stalled(s: dict) -> dict:
    s["train/loss"] = [(100, 3.3), (500, 3.29), (1000, 3.28), (1499, 3.27)]  # from 3.32 at step 0: barely moved
    return s


def test_lr_too_low_at_the_peak_but_not_in_a_decayed_tail():
    s = stalled(healthy())
    s["lr-SGD"] = [(0, 0.1), (500, 0.1), (1000, 0.001), (1499, 0.001)]
    for j in range(7):  # the decayed tail is slow on purpose
        s[f"update_ratio/{j:02d}.{weight(j)}"] = [(0, -3.0), (500, -3.0), (1000, -5.0), (1499, -5.0)]
    assert names(diagnose(s)) == []
    s["lr-SGD"] = const(0.001)
    f = only(diagnose(s), "lr_too_low")
    assert f.steps == (0,) and "barely fell" in f.why
    assert "lr_too_low" not in names(diagnose(s, thresholds=Thresholds(update_ratio_low=-6)))


def test_lr_too_low_is_judged_through_a_cosine_schedule_while_the_lr_is_high():
    s = stalled(healthy())
    s["lr-AdamW"] = [(0, 1e-6), (500, 0.9e-6), (1000, 0.5e-6), (1499, 0.1e-6)]
    for j in range(7):
        s[f"update_ratio/{j:02d}.{weight(j)}"] = const(-6.0)
    # phases by halving: 1e-6 and 0.9e-6 one phase, 0.5e-6 the next (at half the peak: judged), 0.1e-6 the tail
    assert only(diagnose(s), "lr_too_low").steps == (0, 1000)


def test_a_too_low_lr_that_still_learned_is_a_note():
    s = healthy()
    for j in range(7):
        s[f"update_ratio/{j:02d}.{weight(j)}"] = const(-5.0)
    d = diagnose(s)  # train/loss 2.3 from 3.32: it learned
    assert d.findings == () and [n.name for n in d.notes] == ["lr_too_low"]


def test_step_0_update_ratios_do_not_judge_the_lr():
    # naive init: the first update is huge whatever the lr; a phase logged only at step 0 is not judged
    s = spiky(healthy())
    s["lr-SGD"] = [(0, 0.1), (500, 0.1), (999, 0.01), (1499, 0.01)]
    for j in range(7):
        s[f"update_ratio/{j:02d}.{weight(j)}"] = [(0, -0.5), (1499, -3.0)]
    assert "lr_too_high" not in names(diagnose(s))


# -- diverged ------------------------------------------------------------------------------------------------------


def test_diverged_from_result_json():
    result = {"status": "diverged", "error": "loss became nan at step 812\nmore detail", "diverged_step": 812,
              "diverged_layer": "model.hidden.3.act"}
    f = only(diagnose(healthy(), result), "diverged")
    assert f.layers == ("model.hidden.3.act",) and f.steps == (812,)
    assert f.measured == "loss became nan at step 812" and "lower the learning rate" in f.remedy.text


def test_diverged_with_unknown_keys_and_from_the_loss_curve():
    assert only(diagnose({}, {"status": "diverged"}), "diverged").steps == ()
    s = healthy()
    s["train/loss"] = [(0, 3.3), (500, 2.5), (1000, math.inf)]
    f = only(diagnose(s), "diverged")
    assert f.steps == (1000,) and "inf" in f.measured
    assert "diverged" not in names(diagnose(healthy(), {"status": "ok"}))


def test_malformed_result_values_count_as_unknown():
    result = {"status": "diverged", "diverged_step": "soon", "diverged_layer": 3, "error": "", "init_loss": "n/a"}
    d = diagnose({}, result)
    assert names(d) == ["diverged"] and only(d, "diverged").steps == () and only(d, "diverged").layers == ()


# -- attention --------------------------------------------------------------------------------------------------------


def attention(d0: float, end: float) -> dict:
    return {f"attn/{i:02d}.model.blocks.{i}.attn.scores/std": [(0, d0), (500, end), (1499, end)] for i in range(4)}


def test_attention_logits_too_large_at_step_0_are_a_finding_grown_later_a_note():
    s = {**healthy(), **attention(62.0, 50.0)}  # naive init: std ~60
    f = only(diagnose(s), "attention")
    assert len(f.layers) == 4 and f.steps == (0,) and "logits std 62 at step 0" in f.measured
    assert diagnose({**healthy(), **attention(1.0, 2.3)}).health == "healthy"  # kaiming + LayerNorm, measured
    d = diagnose({**healthy(), **attention(1.0, 8.0)})
    assert d.findings == () and [n.name for n in d.notes] == ["attention"]


# -- thresholds -------------------------------------------------------------------------------------------------------


def test_thresholds_from_mapping():
    assert Thresholds.from_mapping(None) == Thresholds()
    assert Thresholds.from_mapping({"saturation_far_tail": 0.4, "dead": 0}) == Thresholds(saturation_far_tail=0.4, dead=0)
    # a record written before the thresholds were split by activation kind
    assert Thresholds.from_mapping({"saturation": 0.4}) == Thresholds(saturation_bounded=0.4)


def test_thresholds_refuse_unknown_keys_and_bad_values():
    with pytest.raises(ValueError, match=r"unknown diagnosis threshold 'satruation'; valid ones: init_loss_ratio, "
                                         r"saturation_bounded, .*attention_std, loss_rise$"):
        Thresholds.from_mapping({"satruation": 0.3})
    for bad, match in [({"saturation_one_sided": 1.5}, r"saturation_one_sided=1.5 must be in \[0, 1\]"),
                       ({"gradient_ratio": 1}, "gradient_ratio=1 must be > 1"),
                       ({"init_loss_ratio": 0.5}, ">= 1"),
                       ({"update_ratio_low": -1}, "update_ratio_low=-1 must be below diagnosis.update_ratio_high=-2.0"),
                       ({"dead": "0.1"}, "dead='0.1' must be a finite number"),
                       ({"dead": True}, "must be a finite number")]:
        with pytest.raises(ConfigError, match=match) as e:
            Thresholds.from_mapping(bad)
        assert "\n" not in str(e.value)


# -- output ---------------------------------------------------------------------------------------------------------


def test_to_dict_is_json_and_markdown_shows_the_evidence():
    s = healthy()
    s["init/loss"] = [(0, 20.0)]
    s[f"{grad(0)}/std"] = const(0.0)
    s[f"{act(1)}/saturation"] = const(0.9)
    d = diagnose(s, {"status": "ok"})
    data = json.loads(json.dumps(d.to_dict(), allow_nan=False))
    health = ["confident_start", "saturated", "vanishing_gradients"]  # no gradient at all reaches the first layer
    assert data["health"] == ",".join(health) and data["thresholds"]["saturation_bounded"] == 0.3
    assert [f["name"] for f in data["findings"]] == health
    assert data["findings"][0]["evidence"][0] == {"layer": "model.head", "step": 0, "value": 20.0}
    assert data["not_applicable"] == ["attention"] and data["not_checked"] == []
    md = d.to_markdown("init=naive")
    assert md.startswith("# Diagnosis: init=naive") and "## 1. confident_start" in md
    assert "- **Where**: model.hidden.1.act at steps 0, 1499" in md and "- **Fix**:" in md


def test_the_text_tab_card_is_short_one_row_per_finding_notes_apart():
    s = healthy()
    s["init/loss"] = [(0, 20.0)]
    s[f"{act(3)}/saturation"] = [(0, 0.1), (1499, 0.45)]  # grew: a note
    card = diagnose(s).to_card("init=naive,norm=none", 2.4312)
    lines = card.splitlines()
    assert lines[0] == "UNHEALTHY · **init=naive,norm=none: confident_start** · val loss 2.4312"
    assert lines[2] == "| finding | where | measured | fix |" and lines[4].startswith("| confident_start | model.head")
    assert lines[-1].startswith("note: saturated: it grew during training")
    assert len(lines) == 7
    assert diagnose(healthy()).to_card("init=kaiming", None).startswith("**init=kaiming: healthy**")


def test_write_diagnosis_replaces_each_file_atomically(tmp_path, monkeypatch):
    import os

    before = diagnose(healthy())
    write_diagnosis(tmp_path, before, "run")
    after = diagnose(naive_scalars())

    def killed(src, dst):  # the process dies between writing the new text and putting it in place
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        write_diagnosis(tmp_path, after, "run")
    # the files a reader finds are still whole: the earlier diagnosis, not a half-written new one
    assert (tmp_path / "diagnosis.md").read_text().startswith("# Diagnosis: run\n\n**Health: healthy**\n")
    assert json.loads((tmp_path / "diagnosis.json").read_text())["health"] == "healthy"


def test_diagnose_path_refuses_what_is_neither_a_run_nor_a_sweep(tmp_path):
    with pytest.raises(UserError, match="no such folder: .*nope.*give a run folder"):
        diagnose_path(tmp_path / "nope")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(UserError, match="file.txt' is a file, not a folder; give a run folder"):  # issue 20
        diagnose_path(tmp_path / "file.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="neither a run folder nor a sweep folder of runs; give outputs/runs") as e:
        diagnose_path(tmp_path)
    assert "\n" not in str(e.value)


# -- real event files -----------------------------------------------------------------------------------------------


def write_events(run_dir, scalars):
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(run_dir))
    for tag, series in scalars.items():
        for step, value in series:
            writer.add_scalar(tag, value, step)
    writer.close()


def naive_scalars():
    s = healthy()
    s["init/loss"] = [(0, 19.5)]
    for i in range(5):
        s[f"{act(i)}/saturation"] = [(0, 0.85), (500, 0.6), (1000, 0.5), (1499, 0.45)]
    return s


def test_diagnose_path_reads_a_run_and_a_sweep_of_event_files(tmp_path):
    sweep = tmp_path / "sweep"
    naive, kaiming = sweep / "init=naive", sweep / "init=kaiming"
    write_events(naive, naive_scalars())
    write_events(kaiming, healthy())
    (naive / "result.json").write_text(json.dumps({"status": "diverged", "error": "loss is nan at step 1499",
                                                   "diverged_step": 1499, "diverged_layer": "model.hidden.0.act"}))
    (sweep / "multirun.yaml").write_text("")  # sweep-level files are ignored

    [(path, d)] = diagnose_path(naive)
    assert path == naive
    assert d.health == "diverged,confident_start,saturated" and d.status == "diverged"
    assert only(d, "saturated").layers == tuple(f"model.hidden.{i}.act" for i in range(5))
    assert only(d, "confident_start").measured.startswith("init/loss 19.5")

    runs = diagnose_path(sweep)
    assert [(p.name, d.health) for p, d in runs] == [("init=kaiming", "healthy"),
                                                     ("init=naive", "diverged,confident_start,saturated")]
    assert diagnose_run(kaiming).checked == MLP_RULES

    text = report_text(sweep)
    assert text.startswith("# Diagnosis: sweep\n\n- init=kaiming  healthy\n- init=naive    diverged,confident_start,"
                           "saturated\n")
    assert "## Diagnosis: init=naive" in text and f"init/loss 19.5 = {19.5 / LOG_V:.1f} x log(V)" in text
    assert report_text(kaiming).startswith("# Diagnosis: init=kaiming\n\n**Health: healthy**")
    assert not (naive / "diagnosis.json").exists()  # reading a diagnosis writes nothing


# -- what the callbacks record of someone else's network (issue 26) ----------------------------------------------------


def test_non_finite_values_the_callbacks_counted_are_a_divergence_at_their_first_step_and_layer():
    """No result.json, no train/loss: the run's only trace of its blow-up is the callbacks' `nonfinite` counts."""
    s = healthy()
    del s["train/loss"]
    s[f"{act(3)}/nonfinite"] = [(1000, 0.5), (1499, 1.0)]
    s[f"{act(1)}/nonfinite"] = [(1499, 1.0)]  # later: the blow-up spread forward
    f = only(diagnose(s), "diverged")
    assert f.layers == ("model.hidden.3.act",) and f.steps == (1000,)
    assert "non-finite values in model.hidden.3.act from step 1000" in f.measured


def test_a_module_called_twice_is_judged_as_its_kind_in_each_call():
    """`name@2` is the second call of `name`: a ReLU's 50% flat is healthy in both calls, a tanh's is not."""
    s = healthy(depth=0)
    for call in ("net.act@1", "net.act@2"):
        s.update({f"act/0{call[-1]}.{call}/mean": const(0.4), f"act/0{call[-1]}.{call}/std": const(0.6),
                  f"act/0{call[-1]}.{call}/saturation": const(0.5)})
    assert names(diagnose(s, activations={"net.act": "relu"})) == []
    assert only(diagnose(s, activations={"net.act": "tanh"}), "saturated").layers == ("net.act@1", "net.act@2")


def test_attention_hidden_by_a_fused_kernel_is_said_so_not_called_not_applicable():
    s = healthy()
    s["attn/05.h.0.attn/fused"] = const(1.0)
    d = diagnose(s)
    assert "attention" not in d.not_applicable and "attention" not in d.checked
    assert "attention not observed: fused kernel" in str(d.missing)
