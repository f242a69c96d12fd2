"""The diagnosis benchmark's design, without training: its cases, their split into halves fixed in code, and the
count of remedies moving the wrong way."""

from __future__ import annotations

import hashlib
from collections import Counter
from types import SimpleNamespace

from namegen.bench_diagnosis import CASES, DEV, HELD_OUT, Outcome, bad_remedies, rates


def test_at_least_30_labelled_cases_split_once_by_name_into_two_halves():
    assert len(CASES) >= 30 and len({c.name for c in CASES}) == len(CASES)
    for c in CASES:  # the split is a hash of the name: it never depends on results
        assert c.half == (DEV if hashlib.sha256(c.name.encode()).digest()[0] % 2 == 0 else HELD_OUT)
    halves = Counter((c.half, bool(c.expect)) for c in CASES)
    assert all(halves[half, faulty] >= 5 for half in (DEV, HELD_OUT) for faulty in (True, False))


def test_the_cases_cover_each_norm_optimizer_and_length():
    def has(c, *words):
        text = " ".join(c.overrides)
        return all(w in text for w in words)

    lr_high = [c for c in CASES if "lr_too_high" in c.expect]
    for norm in ("none", "batchnorm", "layernorm"):
        assert any(has(c, f"norm={norm}") and not has(c, "momentum", "optim=adamw") for c in lr_high), norm
        assert any(has(c, f"norm={norm}", "momentum") for c in lr_high), norm
        assert any(has(c, f"norm={norm}", "optim=adamw") for c in lr_high), norm
        assert any(has(c, f"norm={norm}") for c in CASES if c.expect == ("lr_too_low",)), norm
        assert any(has(c, f"norm={norm}") for c in CASES if "confident_start" in c.expect), norm
    assert {c.steps for c in CASES if not c.transformer} == {1500, 3000}
    assert any(c.transformer and c.expect for c in CASES) and any(c.transformer and not c.expect for c in CASES)
    assert any("seed=2" in c.overrides for c in CASES)


def finding(name: str, *overrides: str):
    return SimpleNamespace(name=name, remedy=SimpleNamespace(overrides=overrides))


def test_a_remedy_raising_a_too_high_lr_is_counted_as_moving_the_wrong_way(tmp_path):
    words = tmp_path / "words.txt"
    words.write_text("\n".join(["emma", "olivia", "ava", "isabella", "sophia"] * 40) + "\n")
    case = next(c for c in CASES if c.name == "sgd lr 30 layernorm 3000 seed 2")
    wrong = SimpleNamespace(findings=[finding("lr_too_high", "optim.optimizer.lr=300000")])
    bad, way = bad_remedies(case, str(words), ["optim.optimizer.lr=300000"], wrong)
    assert way == ["lr_too_high: optim.optimizer.lr 30 -> 300000"] and bad == []
    right = SimpleNamespace(findings=[finding("lr_too_high", "optim.optimizer.lr=0.2")])
    assert bad_remedies(case, str(words), ["optim.optimizer.lr=0.2"], right) == ([], [])
    in_effect = SimpleNamespace(findings=[finding("lr_too_high", "model.norm=layernorm")])
    bad, way = bad_remedies(case, str(words), ["model.norm=layernorm"], in_effect)
    assert bad == ["model.norm=layernorm in effect"] and way == []
    o = Outcome(case, diagnosis=wrong, bad_remedies=bad, wrong_way=["x"])
    assert rates([o])["remedies moving the wrong way"] == (1, 1)
