import random
from collections import Counter

import torch

from namegen.data import CharDataModule, RandomBatches, build_examples, build_sequences, load_words, split_words
from namegen.vocab import BOUNDARY, Vocab


def test_names_txt_split_sizes_match_makemore(names_txt):
    dm = CharDataModule(source="file", path=str(names_txt), block_size=3, seed=42).prepare()
    assert len(dm.vocab) == 27
    assert [len(dm.y[s]) for s in ("train", "val", "test")] == [182_625, 22_655, 22_866]
    assert dm.x["train"].shape == (182_625, 3)


def test_split_is_makemores_global_random_shuffle(names_txt):
    words = names_txt.read_text().splitlines()
    expected = list(words)
    random.seed(42)
    random.shuffle(expected)
    train, val, test = split_words(words, 42)
    assert train + val + test == expected
    assert (len(train), len(val)) == (int(0.8 * len(words)), int(0.9 * len(words)) - int(0.8 * len(words)))


def test_splits_are_disjoint_on_unique_words():
    words = load_words("names_first")
    train, val, test = split_words(words, 0)
    assert not (set(train) & set(val) or set(train) & set(test) or set(val) & set(test))
    assert Counter(train + val + test) == Counter(words)


def test_builtin_corpora_sizes():
    assert len(load_words("names_first")) == 5_163
    assert len(load_words("names_last")) == 88_799


def test_vocab_round_trip_and_boundary_first():
    vocab = Vocab.from_words(["emma", "zoe", "ava"])
    assert vocab.chars[0] == BOUNDARY and list(vocab.chars[1:]) == sorted("aemovz")
    assert vocab.decode(vocab.encode("zoe")) == "zoe"
    assert Vocab.from_list(vocab.to_list()) == vocab


def test_examples_by_hand():
    vocab = Vocab.from_words(["ab"])  # . a b -> 0 1 2
    x, y = build_examples(["ab"], vocab, block_size=3)
    assert x.tolist() == [[0, 0, 0], [0, 0, 1], [0, 1, 2]]
    assert y.tolist() == [1, 2, 0]


def test_batches_depend_only_on_the_step():
    x, y = torch.arange(100).view(50, 2), torch.arange(50)
    stream = iter(RandomBatches(x, y, batch_size=8, seed=3))
    first = [next(stream) for _ in range(5)]
    assert first[0][0].shape == (8, 2) and first[0][1].shape == (8,)  # (B, T), (B,)
    resumed = next(iter(RandomBatches(x, y, batch_size=8, seed=3, start_batch=lambda: 3)))
    assert torch.equal(resumed[0], first[3][0]) and torch.equal(resumed[1], first[3][1])
    assert not torch.equal(first[0][1], first[1][1])
    assert torch.equal(first[2][0][..., 0] // 2, first[2][1])  # rows stay paired with their targets


def test_a_resume_straddling_a_generator_block_draws_the_same_batches():
    x, y = torch.arange(100).view(50, 2), torch.arange(50)
    start = RandomBatches.BLOCK - 4  # the batches cross from one generator block into the next
    whole = iter(RandomBatches(x, y, batch_size=8, seed=3, start_batch=lambda: start))
    batches = [next(whole) for _ in range(8)]
    resumed = iter(RandomBatches(x, y, batch_size=8, seed=3, start_batch=lambda: start + 5))
    for i in range(5, 8):
        assert torch.equal(next(resumed)[1], batches[i][1])
    assert len({tuple(b[1].tolist()) for b in batches}) == 8  # 8 different batches


def test_sequences_by_hand():
    vocab = Vocab.from_words(["ab", "b"])  # . a b -> 0 1 2
    x, y = build_sequences(["ab", "b"], vocab, block_size=4)
    assert x.tolist() == [[0, 1, 2, 0], [0, 2, 0, 0]]  # '.' then the word, '.'-padded
    assert y.tolist() == [[1, 2, 0, -1], [2, 0, -1, -1]]  # the word then '.', -1 where the loss ignores it


def test_sequence_block_size_is_the_longest_name_plus_one(names_txt):
    dm = CharDataModule(source="file", path=str(names_txt), block_size=None, context="sequence").prepare()
    assert dm.block_size == 16  # makemore: max_word_length + 1 on names.txt
    assert dm.x["train"].shape == (25626, 16) and dm.y["train"].shape == (25626, 16)
    assert (dm.y["train"] >= 0).sum().item() == 182_625  # the same next-character targets as the MLP's windows
