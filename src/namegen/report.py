"""`namegen report SWEEP`: a static Markdown report of a sweep, rendered from its event files.

Writes SWEEP/report/report.md with PNG figures beside it: the summary table, the
loss curves overlaid, per-layer saturation at step 0 and at the end, the lesson's
four plots for each run, and names sampled from each run's best checkpoint.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np

from namegen.callbacks import plots
from namegen.callbacks.tags import ACT, GRAD, GRAD_DATA_RATIO, UPDATE_RATIO, WEIGHT_GRAD
from namegen.checkpoint import load_checkpoint
from namegen.events import Scalars, family, histogram_density, layer_saturation, load, scalars_of
from namegen.sample import sample_names
from namegen.errors import UserError
from namegen.paths import writable_folder
from namegen.results import EVENT_GLOB, read_result, require_runs
from namegen.sweep import markdown_table, summary_rows

def slug(name: str) -> str:
    """A run name as a file-name-safe, link-safe string: init=naive,norm=none -> init-naive_norm-none."""
    return re.sub(r"[^A-Za-z0-9._-]", "", name.replace("=", "-").replace(",", "_"))


def loss_curves(runs: dict[str, Scalars]):
    fig = plots.Figure(figsize=(12, 4), dpi=plots.DPI)
    ax_train, ax_val = fig.subplots(1, 2)
    for name, scalars in runs.items():
        for ax, tag in ((ax_train, "train/loss"), (ax_val, "val/loss")):
            if tag in scalars:
                steps, values = zip(*scalars[tag])
                ax.plot(steps, values, label=name)
    ax_train.set(title="train loss (one batch per point)", xlabel="step", ylabel="loss", yscale="log")
    ax_val.set(title="val loss (BatchNorm on running statistics)", xlabel="step", ylabel="loss")
    for ax in (ax_train, ax_val):
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def saturation_bars(runs: dict[str, Scalars]):
    fig = plots.Figure(figsize=(12, 4), dpi=plots.DPI)
    axes = fig.subplots(1, 2, sharey=True)
    width = 0.8 / max(len(runs), 1)
    for ax, at, title in ((axes[0], "first", "at step 0"), (axes[1], "last", "at the end")):
        for i, (name, scalars) in enumerate(runs.items()):
            values = layer_saturation(scalars, at)
            ax.bar(np.arange(len(values)) + i * width, [100 * v for v in values], width, label=name)
        ax.set(title=f"saturated units (tanh: |t| > 0.97; relu: t <= 0), {title}", xlabel="hidden layer",
               ylabel="% of units")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def lesson_plots(acc, scalars: Scalars, name: str) -> dict[str, object]:
    """The four plots of makemore part 3 for one run, at step 0 (where initialization shows)."""
    hist_tags = acc.Tags()["histograms"]

    def first(tag):  # the scalar's value at step 0, NaN if it was not logged
        return scalars.get(tag, [(0, np.nan)])[0][1]

    def curves(fam, label):
        return [(label(i, module, tag), *histogram_density(acc, tag, "first")[1:]) for i, module, tag in family(hist_tags, fam)]

    def act_label(i, module, tag):
        sat = first(tag + "/saturation")
        sat = f", saturated {100 * sat:.1f}%" if np.isfinite(sat) else ""
        return f"{i} {module}: mean {first(tag + '/mean'):+.2f}, std {first(tag + '/std'):.2f}{sat}"

    def grad_label(i, module, tag):
        return f"{i} {module}: mean {first(tag + '/mean'):+.2e}, std {first(tag + '/std'):.2e}"

    def weight_label(j, param, tag):
        return f"{param}: grad:data {first(tag.replace(WEIGHT_GRAD, GRAD_DATA_RATIO, 1)):.2e}"

    updates = {param: scalars[tag] for _, param, tag in family(scalars, UPDATE_RATIO)}
    return {
        "activations": plots.distributions(f"{name}: activation distribution at step 0", "activation output",
                                           curves(ACT, act_label)),
        "activation_grads": plots.distributions(f"{name}: activation gradient distribution at step 0", "gradient",
                                                curves(GRAD, grad_label)),
        "weight_grads": plots.distributions(f"{name}: weight gradient distribution at step 0", "gradient",
                                            curves(WEIGHT_GRAD, weight_label)),
        "update_ratios": plots.update_ratios(updates),
    }


def report(path: str | Path, out_dir: str | Path | None = None, n_samples: int = 8, seed: int = 0) -> Path:
    """Render the report of a run or sweep folder; returns the path of report.md. Checks come before any write."""
    folder = Path(path)
    run_dirs = require_runs(folder)
    out = writable_folder(out_dir if out_dir is not None else folder / "report",
                          "--out" if out_dir is not None else "the report folder (--out)")
    made = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        return render(folder, run_dirs, out, n_samples, seed)
    except UserError:
        if made:  # refused: nothing of this command is left behind
            shutil.rmtree(out, ignore_errors=True)
        raise


def render(folder: Path, run_dirs: list[Path], out: Path, n_samples: int, seed: int) -> Path:
    from namegen.checkpoint import CheckpointError
    from namegen.diagnosis import diagnose_run
    from namegen.diagnosis.files import sweep_why

    # the runs' results as they are: the sweep's own summary files are its records, not rewritten here
    table = markdown_table(*summary_rows([(d.name, read_result(d)) for d in run_dirs]))
    accs = {d.name: load(d, histograms=True) for d in run_dirs if any(d.glob(EVENT_GLOB))}
    scalars = {name: scalars_of(acc) for name, acc in accs.items()}
    lost = [d.name for d in run_dirs if not scalars.get(d.name)]
    notes = [f"- {name}: no readable event files (deleted or corrupt); left out of the curves and plots, still sampled"
             for name in lost] + [""] * bool(lost)
    accs = {name: acc for name, acc in accs.items() if scalars[name]}
    scalars = {name: s for name, s in scalars.items() if s}

    plots.save(loss_curves(scalars), out / "loss_curves.png")
    plots.save(saturation_bars(scalars), out / "saturation.png")
    behind = sweep_why(folder) if len(run_dirs) > 1 else {}  # why each run clearly behind the best is behind
    table += "".join(f"\n- {line}" for line in behind.values()) + "\n" * bool(behind)
    md = [f"# namegen report: {folder.name}\n", "## Summary\n", table, *notes,
          "## Loss curves\n", "![loss curves](loss_curves.png)\n",
          "## Saturation per layer\n", "![saturation at step 0 and at the end](saturation.png)\n",
          "## Diagnosis\n"]
    md += [diagnose_run(d).to_markdown(d.name) for d in run_dirs]

    samples, skipped = {}, []
    for d in run_dirs:
        try:
            loaded = load_checkpoint(d)
        except CheckpointError as e:
            skipped.append(f"- {d.name}: no names ({e})")
            continue
        samples[d.name] = list(sample_names(loaded.model, loaded.vocab, n_samples, seed))
    if samples:
        md += [f"## Samples (seed {seed}, best checkpoint of each run)\n",
               markdown_table(list(samples), [list(row) for row in zip(*samples.values())])]
    md += skipped

    for name, acc in accs.items():
        md.append(f"## {name}\n")
        for kind, fig in lesson_plots(acc, scalars[name], name).items():
            file = f"{slug(name)}_{kind}.png"
            plots.save(fig, out / file)
            md.append(f"![{name} {kind}]({file})\n")
    report_file = out / "report.md"
    report_file.write_text("\n".join(md))
    return report_file
