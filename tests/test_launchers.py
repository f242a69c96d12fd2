"""Parallel, cluster and multi-process launches, for real: joblib, submitit's local executor, DDP on 2 CPU processes."""

import json

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from conftest import FAST
from namegen.model import BatchNorm1d
from conftest import run_train
from test_sweep import free_port, job_dirs


def results(sweep):
    return {run: json.loads((sweep / run / "result.json").read_text()) for run in job_dirs(sweep)}


def test_joblib_runs_two_jobs_at_once(tmp_path):
    sweep = tmp_path / "sweep"
    # each job trains 150 steps that sleep 0.05 s each (test_resume.Slow): 7.5 s of training whatever the load,
    # which costs no CPU, for the two to overlap in
    result = run_train("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "init=naive,kaiming",
                       "callbacks=minimal", "trainer.max_steps=150", "trainer.val_check_interval=150",
                       "+callbacks.slow._target_=test_resume.Slow", "+callbacks.slow.after=0",
                       f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stderr[-3000:]
    a, b = results(sweep).values()
    assert a["status"] == b["status"] == "ok" and a["pid"] != b["pid"]
    # the two jobs' training overlapped in time: they ran at once, not one after the other
    assert a["started_at"] < b["finished_at"] and b["started_at"] < a["finished_at"]


def test_submitit_local_launcher_completes_a_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_train("-m", "hydra/launcher=submitit_local", "init=naive,kaiming", "callbacks=minimal", *FAST,
                       f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert job_dirs(sweep) == ["init=kaiming", "init=naive"]
    assert all(r["status"] == "ok" for r in results(sweep).values())
    assert (sweep / ".submitit").is_dir()  # the jobs really went through submitit


def test_ddp_on_two_cpu_processes_trains_checkpoints_and_keeps_the_processes_in_step(tmp_path):
    probe = ["+callbacks.probe._target_=rank_probe.RankWeights",  # tests/ is on the subprocess's PYTHONPATH
             "+callbacks.hooks._target_=rank_probe.HookCounts"]
    result = run_train("trainer=ddp", "norm=batchnorm", *FAST, *probe, f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Starting with 2 processes" in result.stderr + result.stdout
    assert (tmp_path / "checkpoints" / "best.ckpt").is_file()
    assert json.loads((tmp_path / "result.json").read_text())["status"] == "ok"
    ranks = json.loads((tmp_path / "rank_weights.json").read_text())
    assert ranks["steps"] == 40 and len(ranks["sums"]) == 2
    assert ranks["sums"][0] == ranks["sums"][1]  # the processes hold the same weights
    hooks = json.loads((tmp_path / "hook_counts.json").read_text())
    assert len(hooks["ranks"]) == 2  # every hook once per optimizer step, in each process, as in a single one
    assert all(counts == {hook: 40 for hook in counts} for counts in hooks["ranks"])


def _sync_bn_worker(rank, port, x, out):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    torch.manual_seed(0)
    bn = BatchNorm1d(x.shape[1])
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-1, 1)
    half = x[rank * 4:(rank + 1) * 4].clone().requires_grad_(True)
    y = bn(half)
    (y * torch.arange(1.0, 1 + y.numel()).view_as(y)).sum().backward()
    out[rank] = torch.cat([y.detach().flatten(), half.grad.flatten(), bn.running_var])
    dist.destroy_process_group()


def test_batchnorm_syncs_statistics_across_processes():
    """Two processes with half a batch each give what one BatchNorm gives on the whole batch."""
    torch.manual_seed(1)
    x = torch.randn(8, 3) * 3 + 1
    out = mp.Manager().dict()
    mp.spawn(_sync_bn_worker, args=(free_port(), x, out), nprocs=2, join=True)

    torch.manual_seed(0)
    ref = torch.nn.BatchNorm1d(3)
    with torch.no_grad():
        ref.weight.uniform_(0.5, 1.5)
        ref.bias.uniform_(-1, 1)
    whole = x.clone().requires_grad_(True)
    y = ref(whole)
    weights = torch.cat([torch.arange(1.0, 13).view(4, 3), torch.arange(1.0, 13).view(4, 3)])
    (y * weights).sum().backward()
    for rank in range(2):
        n = 12
        assert torch.allclose(out[rank][:n], y[rank * 4:(rank + 1) * 4].detach().flatten(), atol=1e-5)
        assert torch.allclose(out[rank][n:2 * n], whole.grad[rank * 4:(rank + 1) * 4].flatten(), atol=1e-5)
        assert torch.allclose(out[rank][2 * n:], ref.running_var, atol=1e-5)
