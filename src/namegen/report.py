"""`namegen report SWEEP`: a static Markdown report of a sweep, rendered from its event files.

Writes SWEEP/report/report.md with PNG figures beside it: the summary table, the
loss curves overlaid, per-layer saturation at step 0 and at the end, the lesson's
four plots for each run, and names sampled from each run's best checkpoint.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from namegen import plots
from namegen.checkpoint import BEST, CHECKPOINT_DIR, load_checkpoint
from namegen.errors import UserError
from namegen.events import Scalars, histogram_density, layer_saturation, load, scalars_of
from namegen.sample import sample_names
from namegen.sweep import markdown_table, write_summary

LAYER_TAG = re.compile(r"^(act|grad)/layer_(\d+)$")


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
    matches = [(m.group(1), int(m.group(2)), tag) for tag in hist_tags if (m := LAYER_TAG.match(tag))]
    layers = sorted((i, tag) for kind, i, tag in matches if kind == "act")
    grads = sorted((i, tag) for kind, i, tag in matches if kind == "grad")
    weights = sorted(t for t in hist_tags if t.startswith("weight_grad/"))
    sat0 = layer_saturation(scalars, "first")

    def first(tag):  # the scalar's value at step 0, NaN if it was not logged
        return scalars.get(tag, [(0, np.nan)])[0][1]

    def curves(tags, label):
        return [(label(i, tag), *histogram_density(acc, tag, "first")[1:]) for i, tag in tags]

    def act_label(i, tag):
        sat = f", saturated {100 * sat0[i]:.1f}%" if i < len(sat0) else ""
        return f"layer {i}: mean {first(tag + '/mean'):+.2f}, std {first(tag + '/std'):.2f}{sat}"

    def grad_label(i, tag):
        return f"layer {i}: mean {first(tag + '/mean'):+.2e}, std {first(tag + '/std'):.2e}"

    def weight_label(i, tag):
        param = tag.split("/", 1)[1]
        return f"{param}: grad:data {first(f'grad_data_ratio/{param}'):.2e}"

    # the weight matrices, as the TensorBoard figure shows them: not biases, not norm gains
    matrices = {t.split("/", 1)[1] for t in weights}
    updates = {t.split("/", 1)[1]: v for t, v in scalars.items() if t.startswith("update_ratio/") and t.split("/", 1)[1] in matrices}
    return {
        "activations": plots.distributions(f"{name}: activation distribution at step 0", "activation output",
                                           curves(layers, act_label)),
        "activation_grads": plots.distributions(f"{name}: activation gradient distribution at step 0", "gradient",
                                                curves(grads, grad_label)),
        "weight_grads": plots.distributions(f"{name}: weight gradient distribution at step 0", "gradient",
                                            curves([(i, t) for i, t in enumerate(weights)], weight_label)),
        "update_ratios": plots.update_ratios(updates),
    }


def report(sweep_dir: str | Path, out_dir: str | Path | None = None, n_samples: int = 8, seed: int = 0) -> Path:
    """Render the report; returns the path of report.md."""
    sweep = Path(sweep_dir)
    if not sweep.is_dir():
        raise UserError(f"no such sweep folder: {str(sweep)!r}; give the folder a multirun wrote (outputs/sweeps/<time>)")
    out = Path(out_dir) if out_dir is not None else sweep / "report"
    out.mkdir(parents=True, exist_ok=True)
    table = write_summary(sweep)
    run_dirs = [d for d in sorted(sweep.iterdir()) if d.is_dir() and list(d.glob("events.out.tfevents.*"))]
    if not run_dirs:
        raise UserError(f"{sweep} holds no run folders with event files; give a sweep folder (outputs/sweeps/<time>)")
    accs = {d.name: load(d, histograms=True) for d in run_dirs}
    scalars = {name: scalars_of(acc) for name, acc in accs.items()}

    plots.save(loss_curves(scalars), out / "loss_curves.png")
    plots.save(saturation_bars(scalars), out / "saturation.png")
    md = [f"# namegen report: {sweep.name}\n", "## Summary\n", table,
          "## Loss curves\n", "![loss curves](loss_curves.png)\n",
          "## Saturation per layer\n", "![saturation at step 0 and at the end](saturation.png)\n"]

    samples = {}
    for d in run_dirs:
        if (d / CHECKPOINT_DIR / BEST).is_file():
            loaded = load_checkpoint(d)
            samples[d.name] = sample_names(loaded.model, loaded.vocab, n_samples, seed)
    if samples:
        md += [f"## Samples (seed {seed}, best checkpoint of each run)\n",
               markdown_table(list(samples), [list(row) for row in zip(*samples.values())])]

    for name, acc in accs.items():
        md.append(f"## {name}\n")
        for kind, fig in lesson_plots(acc, scalars[name], name).items():
            file = f"{slug(name)}_{kind}.png"
            plots.save(fig, out / file)
            md.append(f"![{name} {kind}]({file})\n")
    path = out / "report.md"
    path.write_text("\n".join(md))
    return path
