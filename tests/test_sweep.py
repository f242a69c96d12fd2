"""Real Hydra multiruns in subprocesses, as a user runs them."""

import csv
import json
import math
import shutil
import subprocess
import sys

import pytest
import yaml

from conftest import FAST, namegen, read_events, run_train
from namegen.sweep import COLUMNS

GRID = ["init=naive,kaiming", "norm=none,batchnorm"]
RUNS = ["init=kaiming,norm=batchnorm", "init=kaiming,norm=none", "init=naive,norm=batchnorm", "init=naive,norm=none"]


def job_dirs(sweep):
    return sorted(p.name for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory, names_txt):
    """The 2x2 grid for a few steps on names.txt, with every diagnostic on."""
    sweep = tmp_path_factory.mktemp("tiny") / "sweep"
    result = run_train("-m", *GRID, "data=file", f"data.path={names_txt}", *FAST, f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stderr[-3000:]
    return sweep, result


def test_parallel_jobs_print_one_line_per_refresh_not_interleaved_bars(tiny_sweep):
    _, result = tiny_sweep
    console = result.stdout + result.stderr
    assert "it/s" not in console and "\r" not in console  # no progress bar was drawn
    for run in RUNS:
        assert f"{run}  step 40/40  " in console


def test_one_flat_folder_per_choice_named_by_the_swept_keys(tiny_sweep):
    sweep, _ = tiny_sweep
    # data.path (a path with '/') and the trainer.* overrides neither nest folders nor enter the names
    assert job_dirs(sweep) == RUNS
    for run in RUNS:
        assert (sweep / run / "checkpoints" / "best.ckpt").is_file()
        assert list((sweep / run).glob("events.out.tfevents.*"))
        assert not [p.name for p in (sweep / run).iterdir() if p.is_file() and p.stat().st_size == 0]  # no empty files


def test_summary_has_a_row_per_job_and_the_columns(tiny_sweep):
    sweep, result = tiny_sweep
    rows = list(csv.DictReader(open(sweep / "summary.csv")))
    assert [r["run"] for r in rows] == RUNS
    assert list(rows[0]) == ["run"] + [key for _, key, _ in COLUMNS]
    by_run = {r["run"]: r for r in rows}
    assert all(r["status"] == "ok" for r in rows)
    assert float(by_run["init=naive,norm=none"]["init_loss"]) > 10
    assert float(rows[0]["uniform_loss"]) == pytest.approx(math.log(27))  # names.txt: 26 letters and '.'
    assert abs(float(by_run["init=kaiming,norm=none"]["init_loss"]) - math.log(27)) < 0.15
    assert float(by_run["init=naive,norm=none"]["init_saturation"]) > 0.5
    assert float(by_run["init=kaiming,norm=batchnorm"]["init_saturation"]) < 0.1
    # the diagnosis, in the health column: the lesson's two failures for naive/none, nothing for kaiming/batchnorm
    assert {"confident_start", "saturated"} <= set(by_run["init=naive,norm=none"]["health"].split(","))
    assert by_run["init=kaiming,norm=batchnorm"]["health"] == "healthy"
    md = (sweep / "summary.md").read_text()
    assert all(run in md for run in RUNS) and "| sat@0 |" in md
    assert "Sweep summary" in result.stdout and "init=naive,norm=none" in result.stdout
    # then the command that opens it, on the lesson
    assert f"tensorboard --logdir {sweep}\n    then open http://localhost:6006/#custom_scalars" in result.stdout


def test_hparams_are_in_the_event_files(tiny_sweep):
    from tensorboard.plugins.hparams import plugin_data_pb2

    sweep, _ = tiny_sweep
    events = read_events(sweep / "init=naive,norm=none")
    content = events.SummaryMetadata("_hparams_/session_start_info").plugin_data.content
    info = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    # the table's hyperparameters are the swept keys: the constant ones would push the losses out of sight
    assert dict(info.hparams) == {"init": info.hparams["init"], "norm": info.hparams["norm"]}
    assert info.hparams["init"].string_value == "naive" and info.hparams["norm"].string_value == "none"
    experiment = plugin_data_pb2.HParamsPluginData.FromString(
        events.SummaryMetadata("_hparams_/experiment").plugin_data.content).experiment
    assert [(h.name, h.differs) for h in experiment.hparam_infos] == [("init", True), ("norm", True)]
    # every choice is in the run's hparams.yaml
    record = yaml.safe_load((sweep / "init=naive,norm=none" / "hparams.yaml").read_text())
    assert record["model.depth"] == "5" and record["data"] == "names.txt" and record["init"] == "naive"
    scalars = events.Tags()["scalars"]
    assert "hp_metric" not in scalars and not [t for t in scalars if t.startswith("hparams/")]
    # the columns are the run's own losses, init loss next to log V
    assert [m.name.tag for m in experiment.metric_infos] == ["init/loss", "init/uniform_loss", "train/loss",
                                                             "val/loss", "test/loss"]


def test_a_failing_job_does_not_stop_the_others(tmp_path, names_txt):
    sweep, tiny = tmp_path / "sweep", tmp_path / "tiny.txt"
    tiny.write_text("ann\nbo\n")  # a readable file: what fails (too few words to split) shows only once it is read
    result = run_train("-m", "data=file", f"data.path={names_txt},{tiny}", "callbacks=minimal", *FAST,
                       f"hydra.sweep.dir={sweep}")
    bad, good = (f"data.path={str(p).replace('/', '_')}" for p in (tiny, names_txt))
    assert result.returncode != 0 and f"1 job(s) failed: {bad}" in result.stderr
    rows = {r["run"]: r for r in csv.DictReader(open(sweep / "summary.csv"))}
    assert rows[bad]["status"] == "failed"
    assert rows[bad]["error"].startswith("DataError: 2 words are too few for a train/val/test split")
    assert rows[good]["status"] == "ok" and float(rows[good]["best_val_loss"]) > 0
    assert (sweep / good / "checkpoints" / "best.ckpt").is_file()


@pytest.mark.parametrize("overrides,message", [
    (["resume=true", "optim.optimizer.lr=0.2"], "was trained with optim.optimizer.lr=0.1, not 0.2"),
    (["resume=true", "threads=5"], "threads=5 must be a positive integer, at most this machine's"),
    ([], "already holds a sweep's runs (4, such as init=kaiming,norm=batchnorm); continue it with resume=true"),
])
def test_a_refused_command_on_a_finished_sweep_writes_nothing(tiny_sweep, tmp_path, names_txt, overrides, message):
    import hashlib

    sweep = tmp_path / "sweep"
    shutil.copytree(tiny_sweep[0], sweep)
    before = {p: hashlib.sha256(p.read_bytes()).digest() for p in sweep.rglob("*") if p.is_file()}
    result = run_train("-m", *GRID, "data=file", f"data.path={names_txt}", *FAST, f"hydra.sweep.dir={sweep}", *overrides,
                       timeout=120)
    assert result.returncode == 2 and message in result.stderr and "Launching" not in result.stdout + result.stderr
    assert {p: hashlib.sha256(p.read_bytes()).digest() for p in sweep.rglob("*") if p.is_file()} == before


def test_sample_a_sweep_side_by_side(tiny_sweep):
    sweep, _ = tiny_sweep
    out = [namegen("sample", str(sweep), "-n", "5", "--seed", "4") for _ in range(2)]
    assert out[0].returncode == 0, out[0].stderr
    lines = out[0].stdout.splitlines()
    assert lines[0].split() == RUNS and set(lines[1]) <= {"-", " "} and len(lines) == 2 + 5
    assert out[0].stdout == out[1].stdout


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_real_tensorboard_server_serves_the_sweep(tiny_sweep):
    import time
    import urllib.request
    from pathlib import Path

    sweep, _ = tiny_sweep
    port = free_port()
    exe = shutil.which("tensorboard") or str(Path(sys.executable).with_name("tensorboard"))
    server = subprocess.Popen([exe, "--logdir", str(sweep), "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"

    def get(path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(base + path, data=data, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    try:
        for _ in range(120):  # the server needs a few seconds to start and load the runs
            try:
                if len(get("/data/runs")) == 4:
                    break
            except OSError:
                pass
            assert server.poll() is None, server.stderr.read().decode()[-2000:]
            time.sleep(0.5)
        assert sorted(get("/data/runs")) == RUNS
        scalars, hists, images = (get(f"/data/plugin/{p}/tags") for p in ("scalars", "histograms", "images"))
        for run in RUNS:
            assert {"train/loss", "val/loss", "init/loss", "act/00.model.hidden.0.act/saturation"} <= set(scalars[run])
            assert "epoch" not in scalars[run] and not [t for t in scalars[run] if t.startswith("hparams/")]
            assert "act/00.model.hidden.0.act" in hists[run]
            assert {"at_step_0/activations", "figures/activations"} <= set(images[run])
        layout = get("/data/plugin/custom_scalars/layout")  # the four runs' layouts, merged by the server
        assert layout["category"][0]["title"] == "1. the lesson"
        charts = [c["title"] for category in layout["category"] for c in category["chart"]]
        assert not [t for t in charts if "attention" in t]  # the MLP has none
        assert [t for t in charts if "norm's input" in t]  # the batchnorm runs have one
        experiment = get("/data/plugin/hparams/experiment", {"experimentName": ""})
        # the swept keys, marked as differing, and nothing constant: TensorBoard shows five columns, whatever they hold
        assert [(h["name"], h.get("differs")) for h in experiment["hparamInfos"]] == [("init", True), ("norm", True)]
        assert [m["name"]["tag"] for m in experiment["metricInfos"]][:2] == ["init/loss", "init/uniform_loss"]
        # the table's values: each metric's last value, read by the server from the runs' own tags
        groups = get("/data/plugin/hparams/session_groups", {"experimentName": "", "allowedStatuses": [
            "STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"], "colParams": [],
            "startIndex": 0, "sliceSize": 10})["sessionGroups"]
        init = {g["name"]: next(m["value"] for m in g["metricValues"] if m["name"]["tag"] == "init/loss")
                for g in groups}
        assert init["init=naive,norm=none"] > 10 > 3.4 > init["init=kaiming,norm=none"]
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_report_renders_the_table_and_every_figure(tiny_sweep, tmp_path):
    import matplotlib.image

    from namegen.report import slug

    from namegen.report import report

    sweep, _ = tiny_sweep
    out = tmp_path / "report"
    md = report(sweep, out, 3).read_text()
    assert "| run | status | health | init loss |" in md and all(f"| {run} | ok |" in md for run in RUNS)
    expected = {"loss_curves.png": (400, 1200), "saturation.png": (400, 1200)}
    for run in RUNS:
        for kind in ("activations", "activation_grads", "weight_grads", "update_ratios"):
            expected[f"{slug(run)}_{kind}.png"] = (400, 1000)
    for name, (height, width) in expected.items():
        assert f"({name})" in md, name
        image = matplotlib.image.imread(out / name)
        assert image.shape[:2] == (height, width), name
        assert image[..., :3].std() > 0.01, f"{name} is blank"  # something was drawn


def test_report_of_one_run_of_a_run_with_lost_events_and_of_a_wrong_folder(tiny_sweep, tmp_path):
    from namegen.errors import UserError
    from namegen.report import report

    sweep, _ = tiny_sweep
    copy = tmp_path / "sweep"
    shutil.copytree(sweep, copy)
    one = copy / "init=kaiming,norm=batchnorm"
    md = report(one, tmp_path / "one", 2).read_text()  # a single run folder
    assert "## Diagnosis" in md and "kaiming" in md and "Samples" in md
    for f in (copy / "init=naive,norm=none").glob("events.out.tfevents.*"):
        f.unlink()
    md = report(copy, tmp_path / "lost", 2).read_text()
    assert "init=naive,norm=none: no readable event files" in md  # said, not silently dropped
    samples = md.split("## Samples", 1)[1].split("\n## ", 1)[0]
    assert "init=naive,norm=none" in samples  # still sampled from its checkpoint
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="neither a run folder nor a sweep folder"):
        report(empty)
    assert not list(empty.iterdir())  # nothing written into a refused folder
