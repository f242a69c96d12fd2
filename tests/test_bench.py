"""The benchmark runs end to end and prints a table whose ratios agree with its rates (the numbers are the README's)."""

import re

from namegen.bench import WARMUP, main, namegen_run


def test_throughput_benchmark_prints_each_contender_and_the_ratios(tmp_path, capsys):
    main(["throughput", "--steps", "250", "--rounds", "1", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    rows = {name: (int(rate), float(ratio))
            for name, rate, ratio in re.findall(r"^\| ([^|]+?) \| (\d+) \| ([\d.]+)x \|$", out, flags=re.M)}
    assert set(rows) == {"plain PyTorch loop", "plain loop, namegen's optimizer", "bare Lightning Trainer",
                         "namegen, diagnostics off", "namegen, diagnostics off, compiled", "namegen, diagnostics on",
                         "namegen, diagnostics on, compiled"}
    # one round: each ratio is that round's steps/s over the plain loop's (the rates are printed rounded)
    base = rows["plain PyTorch loop"][0]
    assert rows["plain PyTorch loop"][1] == 1.0
    for name, (rate, ratio) in rows.items():
        assert abs(ratio - rate / base) <= 0.005 + (1 + ratio) / base, name
    # each printed pair is the quotient of the two contenders' ratios
    pairs = {(a, b): float(r) for a, b, r in re.findall(r"^(namegen[^/]+?) / ([^:]+): ([\d.]+)x$", out, flags=re.M)}
    assert ("namegen, diagnostics on", "namegen, diagnostics off") in pairs and len(pairs) == 4
    for (a, b), r in pairs.items():
        assert abs(r - rows[a][1] / rows[b][1]) <= 0.005 + 0.005 * (1 + r) / rows[b][1], (a, b)  # 2-decimal ratios


def test_each_round_of_a_namegen_contender_is_a_new_run(tmp_path):
    # the second round into the same scratch name must not meet the first round's finished run (it was refused)
    rates = [namegen_run(["callbacks=minimal", "compile=false"], tmp_path / "minimal", WARMUP + 10)
             for _ in range(2)]
    assert all(rate > 0 for rate in rates)
    runs = sorted(p for p in tmp_path.iterdir() if p.name.startswith("minimal-"))
    assert len(runs) == 2 and all((p / "result.json").exists() or (p / "checkpoints").is_dir() for p in runs)
