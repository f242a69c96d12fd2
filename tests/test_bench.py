"""The benchmark runs end to end and prints its comparison table (the numbers themselves are the README's)."""

import re

from namegen.bench import main


def test_throughput_benchmark_prints_each_contender_and_the_ratios(tmp_path, capsys):
    main(["throughput", "--steps", "400", "--rounds", "1", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    rows = dict(re.findall(r"^\| ([^|]+?) \| \d+ \| ([\d.]+)x \|$", out, flags=re.M))
    assert set(rows) == {"plain PyTorch loop", "plain loop, namegen's optimizer", "bare Lightning Trainer",
                         "namegen, diagnostics off", "namegen, diagnostics on"}
    assert all(0 < float(r) < 10 for r in rows.values())
    assert re.search(r"^diagnostics on / off: [\d.]+x$", out, flags=re.M)
