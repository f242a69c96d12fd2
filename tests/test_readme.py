"""The README's promises that code can check: its callbacks example runs as printed and writes the tags it names."""

import re
from pathlib import Path

from conftest import REPO, read_events


def test_the_callbacks_example_runs_and_writes_the_tags_it_names(tmp_path, monkeypatch):
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Using the callbacks in your own Lightning project", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)
    monkeypatch.chdir(tmp_path)  # it logs to ./runs
    exec(compile(code, "README.md", "exec"), {"__name__": "readme_example"})
    run = next(Path("runs/mine").glob("version_*"))
    tags = set(read_events(run).Tags()["scalars"])
    assert {"act/00.net.2/saturation", "act/01.net.4/saturation", "grad/00.net.2/std",
            "update_ratio/00.net.0.weight", "norm/00.net.1/in_std"} <= tags
    csv_header = next(Path("runs/mine").glob("version_*/metrics.csv")).read_text().splitlines()[0]
    assert "act/00.net.2/saturation" in csv_header


def test_namegen_diagnoses_a_run_of_someone_elses_module(tmp_path, monkeypatch):
    """The diagnosis reads the callbacks' tags, whatever module wrote them."""
    from namegen.diagnosis import diagnose_run

    readme = (REPO / "README.md").read_text()
    section = readme.split("## Using the callbacks in your own Lightning project", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {"__name__": "readme_example"})
    diagnosis = diagnose_run(next(Path("runs/mine").glob("version_*")))
    assert {"saturated", "dead_units", "gradients", "learning_rate"} <= set(diagnosis.checked)
