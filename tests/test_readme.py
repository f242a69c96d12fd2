"""Every command in README.md and docs/*.md runs as written, or is named below as too expensive to run here.

The fenced `bash` blocks are split into commands (a `\\` continues a line, `&&` separates commands, `# ...` is a
comment). A command runs here when it is cheap: `namegen ...` (in-process, against a tiny sweep this file trains,
its run folders named as the docs name them), `python train.py --help`, and a `python train.py ...` the docs
show as refused (its comment says `refused`). Every other command must be on EXPENSIVE with the reason, so a new
command cannot slip in unchecked; each expensive `python train.py` command is still composed through Hydra and
namegen's own checks, job by job, so a renamed key or option fails here. Every fenced `python` block runs.
"""

from __future__ import annotations

import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from conftest import NAMES_TXT, REPO, read_events

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

# command, exactly as the docs show it (comments stripped) -> why it is not run by the tests
EXPENSIVE = {
    "python3 -m venv .venv": "creates a virtual environment",
    ". .venv/bin/activate": "changes the caller's shell",
    "pip install -r requirements.txt": "installs packages (minutes)",
    "python train.py -m init=naive,kaiming norm=none,batchnorm": "4 runs of 20,000 steps",
    "tensorboard --logdir outputs/sweeps/<time>": "a server that runs until stopped",
    "python train.py -m init=naive,kaiming,pytorch norm=none,batchnorm,layernorm": "9 runs of 20,000 steps",
    "python train.py -m model.depth=2,5,10 optim.optimizer.lr=0.05,0.1,0.2": "9 runs of 20,000 steps",
    "python train.py -m model=transformer init=naive,kaiming norm=none,layernorm data=file "
    "data.path=../shared/data/names.txt": "4 Transformer runs of 20,000 steps",
    "namegen diagnose outputs/sweeps/<time>/init=naive,norm=none --fix --run": "trains the fixed run",
    "python -m namegen.bench diagnosis --data ../shared/data/names.txt": "the seeded-fault benchmark (~20 min)",
    "python train.py init=naive norm=none resume=outputs/runs/<time>": "continues a 20,000-step run",
    "python train.py -m init=naive,kaiming norm=none,batchnorm resume=true hydra.sweep.dir=outputs/sweeps/<time>":
        "continues a sweep of 20,000-step runs",
    "python train.py -m experiment=makemore data.path=../shared/data/names.txt init=naive,kaiming "
    "norm=none,batchnorm": "4 runs of 200,000 steps",
    "namegen report outputs/sweeps/<time>": "renders every plot of a sweep",
    "python train.py experiment=transformer data.path=../shared/data/names.txt": "a 20,000-step Transformer run",
    "python train.py -m model=transformer init=naive,kaiming norm=none,layernorm data=file "
    "data.path=../shared/data/names.txt optim=adamw_cosine callbacks=transformer trainer.max_steps=3000 "
    "trainer.val_check_interval=1000": "4 Transformer runs of 3,000 steps",
    "python -m namegen.bench throughput --data ../shared/data/names.txt": "a benchmark (minutes)",
    "python -m namegen.bench compile --data ../shared/data/names.txt": "a benchmark with a cold compile (minutes)",
    "python train.py callbacks.diagnostics.every_n_steps=100 ~callbacks.diagnostics.probes.figures "
    "trainer.max_steps=2000": "a 2,000-step run",
}

SWEEP, RUNS = "outputs/sweeps/<time>", "outputs/runs/<time>"  # the placeholders the docs use for a user's folders
TINY = ["callbacks=minimal", "trainer.max_steps=20", "trainer.val_check_interval=10",
        "trainer.num_sanity_val_steps=0", "trainer.log_every_n_steps=10"]


def fenced(language: str) -> list[tuple[str, str]]:
    """(doc name, code) of every fenced block of `language`, in the docs' order."""
    return [(doc.relative_to(REPO).as_posix(), code) for doc in DOCS
            for code in re.findall(rf"^```{language}\n(.*?)^```", doc.read_text(), flags=re.S | re.M)]


def shell_commands() -> list[tuple[str, str, str]]:
    """(doc name, command, its comment) of every command in the docs' bash blocks."""
    found = []
    for doc, code in fenced("bash"):
        for line in code.replace("\\\n", " ").splitlines():
            command, _, comment = line.partition(" #")
            command = " ".join(command.split())
            if command and not command.startswith("#"):
                found += [(doc, part.strip(), comment.strip()) for part in command.split(" && ")]
    return found


def is_cheap(command: str, comment: str) -> bool:
    if command.startswith("namegen"):
        return True
    return command.startswith("python train.py ") and (command.endswith(" --help") or "refused" in comment)


COMMANDS = shell_commands()
CHEAP = [(doc, command, comment) for doc, command, comment in COMMANDS if command not in EXPENSIVE]


def test_every_command_runs_or_is_named_expensive():
    assert len(COMMANDS) > 10, "the docs' commands were not found: has the fence changed from ```bash?"
    unchecked = [f"{doc}: {command}" for doc, command, comment in CHEAP if not is_cheap(command, comment)]
    assert not unchecked, "not run by a test: make them cheap or add them to EXPENSIVE with the reason:\n" + \
        "\n".join(unchecked)
    shown = {command for _, command, _ in COMMANDS}
    stale = [command for command in EXPENSIVE if command not in shown]
    assert not stale, f"EXPENSIVE names commands no doc shows any more: {stale}"


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory) -> Path:
    """A sweep folder with the two runs the docs name, 20 steps each: enough to sample, diagnose and fix."""
    from conftest import make_cfg
    from namegen.training import train

    sweep = tmp_path_factory.mktemp("sweep")
    for init, norm in [("naive", "none"), ("kaiming", "batchnorm")]:
        run = sweep / f"init={init},norm={norm}"
        train(make_cfg(f"'{run}'", f"init={init}", f"norm={norm}", *TINY))  # quoted: the folder holds '=' and ','
    return sweep


@pytest.mark.parametrize("doc,command,comment", CHEAP, ids=[f"{d}: {c}" for d, c, _ in CHEAP])
def test_cheap_command_runs_as_written(doc, command, comment, tiny_sweep, tmp_path, capsys):
    if command.startswith("namegen"):
        from namegen.cli import main

        argv = command.replace(SWEEP, str(tiny_sweep)).replace(RUNS, str(tiny_sweep / "init=naive,norm=none"))
        try:
            code = main(argv.split()[1:])
        except SystemExit as exit:  # --help: argparse prints and exits
            code = exit.code
        assert code == 0
        out = capsys.readouterr().out
        assert out.strip(), f"{command} printed nothing"
        if "--fix" in command:  # reruns the naive run fixed: init back to the default, kaiming; the rest as it was
            assert out.startswith("python train.py norm=none ") and " init=" not in out
        return
    script, *args = command.split()[1:]  # run from an empty folder, to see that nothing is written there
    done = subprocess.run([sys.executable, str(REPO / script), *args], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)
    if "refused" in comment:  # one line naming the mistake, exit code 2, nothing written
        assert done.returncode == 2 and done.stderr.startswith("namegen: error: "), done.stderr
        assert not any(tmp_path.iterdir())
    else:
        assert done.returncode == 0 and "== Choices (group=option) ==" in done.stdout, done.stderr


def train_jobs(command: str) -> list[list[str]]:
    """Jobs of `python train.py [-m] ...` that between them hold every value of every swept key: job i takes
    value i (wrapping) of each key, so a 3 x 3 sweep is checked in 3 jobs, not 9."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    args = [a for a in command.split()[2:] if a != "-m"]
    choices = [[f"{override.get_key_element()}={value}" for value in override.sweep_string_iterator()]
               if override.is_sweep_override() else [arg]
               for arg, override in zip(args, OverridesParser.create().parse_overrides(args))]
    return [[values[i % len(values)] for values in choices] for i in range(max(map(len, choices)))]


COMPOSED = [c for c in EXPENSIVE if c.startswith("python train.py ") and "<" not in c]


@pytest.mark.parametrize("command", COMPOSED)
def test_each_expensive_train_command_composes_and_passes_the_checks(command, tmp_path, monkeypatch):
    """Hydra composes each job (an unknown key or option fails); namegen's checks pass on the first (every check
    costs about a second here, so one job per command)."""
    import namegen.resolvers  # noqa: F401  the config's resolvers, as train.py registers them
    from conftest import make_cfg
    from namegen.checks import validate

    if "names.txt" in command and not NAMES_TXT.is_file():
        pytest.skip(f"reference corpus not found at {NAMES_TXT}")
    monkeypatch.chdir(REPO)  # where the docs run it: data paths are relative to the repository
    jobs = train_jobs(command.replace("../shared/data/names.txt", str(NAMES_TXT)))  # wherever the corpus is here
    assert (len(jobs) > 1) == (" -m " in command)
    configs = [make_cfg(tmp_path / str(i), *job) for i, job in enumerate(jobs)]
    validate(configs[0])


# -- the Python examples ------------------------------------------------------------------------------------


def run_python(code: str, folder: Path, name: str) -> dict:
    """Runs `code` as a script in `folder`; returns its globals."""
    namespace = {"__name__": "readme_example"}
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.chdir(folder)  # the examples log to ./runs
        exec(compile(code, name, "exec"), namespace)
    return namespace


def test_every_python_block_but_the_readmes_runs(tmp_path):
    """The README's two examples train: their fixtures below run and check them."""
    others = [(doc, code) for doc, code in fenced("python") if doc != "README.md"]
    assert others
    for i, (doc, code) in enumerate(others):
        folder = tmp_path / str(i)
        folder.mkdir()
        run_python(code, folder, doc)


def readme_example(marker: str, folder: Path) -> dict:
    """Runs the README's python block that contains `marker`, in `folder`; returns its globals."""
    (code,) = [code for doc, code in fenced("python") if doc == "README.md" and marker in code]
    return run_python(code, folder, "README.md")


@pytest.fixture(scope="module")
def readme_run(tmp_path_factory) -> Path:
    """The folder of the run the README's callbacks example makes, run as printed (once for this file's tests)."""
    folder = tmp_path_factory.mktemp("readme")
    readme_example("class Classifier", folder)
    return next((folder / "runs" / "mine").glob("version_*"))


def test_the_readme_has_exactly_the_python_examples_tested_here():
    readme = [code for doc, code in fenced("python") if doc == "README.md"]
    assert len(readme) == 2 and "class Classifier" in readme[0] and "class TinyGPT2" in readme[1]


def test_the_callbacks_example_runs_and_writes_the_tags_it_names(readme_run):
    tags = set(read_events(readme_run).Tags()["scalars"])
    assert {"act/00.net.2/saturation", "act/01.net.4/saturation", "grad/00.net.2/std",
            "update_ratio/00.net.0.weight", "norm/00.net.1/in_std"} <= tags
    csv_header = next(readme_run.parent.glob("version_*/metrics.csv")).read_text().splitlines()[0]
    assert "act/00.net.2/saturation" in csv_header


def test_namegen_diagnoses_a_run_of_someone_elses_module(readme_run):
    """The diagnosis reads the callbacks' tags, whatever module wrote them, and judges each activation as what it
    is without namegen's record of the module. The example's ReLU follows a LayerNorm, which centres every example
    at 0, so about half its inputs are negative (flat): normal for a ReLU, far above a tanh's limit."""
    from namegen.diagnosis import diagnose_run

    relu = [e.value for e in read_events(readme_run).Scalars("act/00.net.2/saturation")]
    assert len(relu) == 5 and all(0.35 < v < 0.65 for v in relu)
    diagnosis = diagnose_run(readme_run)
    assert {"saturated", "dead_units"} <= set(diagnosis.checked)
    assert not {"saturated", "dead_units"} & set(diagnosis.health.split(","))


def test_the_hugging_face_example_observes_what_the_readme_says(tmp_path):
    """GPT-2 under Diagnostics(): its NewGELUActivation modules found by what they compute (saturation included),
    each LayerNorm's input scale, every weight matrix's update ratio (the tied lm_head once, as wte), the attention
    logits of the eager implementation, the loss the step returns and log V; no warning of an unknown module."""
    pytest.importorskip("transformers")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        readme_example("class TinyGPT2", tmp_path)
    tags = set(read_events(tmp_path / "runs" / "gpt2" / "version_0").Tags()["scalars"])
    h0 = "model.transformer.h.0"
    assert {f"act/00.{h0}.mlp.act/std", f"act/00.{h0}.mlp.act/saturation", f"grad/00.{h0}.mlp.act/std",
            f"norm/00.{h0}.ln_1/in_std", "norm/04.model.transformer.ln_f/in_std", f"attn/00.{h0}.attn/std",
            f"update_ratio/02.{h0}.attn.c_attn.weight", "update_ratio/00.model.transformer.wte.weight",
            "diagnostics/loss", "diagnostics/uniform_loss"} <= tags
    assert not [t for t in tags if "lm_head" in t or t.endswith("/fused")]
    assert not [w for w in caught if str(w.message).startswith(("Diagnostics", "Activations", "Attention"))]


def test_the_readme_is_a_front_door_and_every_link_in_the_docs_resolves():
    assert len((REPO / "README.md").read_text().splitlines()) <= 300
    broken = [f"{doc.name}: {target}" for doc in DOCS
              for target in re.findall(r"\]\(([^)#]+)\)", doc.read_text())
              if "://" not in target and not (doc.parent / target).exists()]
    assert not broken, broken
