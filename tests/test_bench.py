"""The benchmark runs end to end and prints a table whose ratios agree with its rates (the numbers are the README's)."""

import re

from namegen.bench import WARMUP, compare, main, namegen_run


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


def test_each_contender_takes_each_place_in_the_order_once_in_as_many_rounds(capsys):
    """A contender run right after another one measured slower than run before it: no fixed order."""
    order = []
    rates = {"a": 100.0, "b": 50.0, "c": 25.0}
    table = compare({name: lambda name=name: order.append(name) or rates[name] for name in rates}, 3, baseline="a")
    rounds = [order[i:i + 3] for i in range(0, 9, 3)]
    assert all(sorted(r) == ["a", "b", "c"] for r in rounds)  # each once a round
    assert [sorted(r[place] for r in rounds) for place in range(3)] == [["a", "b", "c"]] * 3  # each place, each once
    assert table["b"] == {"steps_per_sec": 50.0, "ratio": 0.5} and table["c"]["ratio"] == 0.25
