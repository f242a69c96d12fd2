"""The README's promises that code can check: its callbacks example runs as printed and writes the tags it names."""

import re
from pathlib import Path

import pytest

from conftest import REPO, read_events


@pytest.fixture(scope="module")
def readme_run(tmp_path_factory) -> Path:
    """The folder of the run the README's callbacks example makes, run as printed (once for this file's tests)."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Using the callbacks in your own Lightning project", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)
    folder = tmp_path_factory.mktemp("readme")
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.chdir(folder)  # it logs to ./runs
        exec(compile(code, "README.md", "exec"), {"__name__": "readme_example"})
    return next((folder / "runs" / "mine").glob("version_*"))


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
