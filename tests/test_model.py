import math

import pytest
import torch

from namegen.data import CharDataModule
from namegen.model import MLP, MLPConfig, initialize
from namegen.module import NameGen


def n_params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("norm,expected", [("batchnorm", 47_024), ("layernorm", 47_024), ("none", 46_497)])
def test_makemore_parameter_counts(norm, expected):
    assert n_params(MLP(MLPConfig(vocab_size=27, norm=norm))) == expected


def test_no_bias_before_a_norm():
    model = MLP(MLPConfig(norm="batchnorm"))
    assert all(b.linear.bias is None for b in model.hidden) and model.head.bias is None
    assert all(b.linear.bias is not None for b in MLP(MLPConfig(norm="none")).hidden)


@pytest.mark.parametrize("norm", ["none", "batchnorm", "layernorm"])
def test_logits_shape(norm):
    model = MLP(MLPConfig(vocab_size=7, block_size=4, depth=2, norm=norm))
    assert model(torch.zeros(5, 4, dtype=torch.long)).shape == (5, 7)


def test_kaiming_scales_by_gain_over_sqrt_fan_in():
    torch.manual_seed(0)
    model = initialize(MLP(MLPConfig(norm="none", n_hidden=400, depth=2)), "kaiming", gain=5 / 3, output_scale=0.1)
    assert model.hidden[1].linear.weight.std().item() == pytest.approx(5 / 3 / math.sqrt(400), rel=0.02)
    assert model.head.weight.std().item() == pytest.approx(0.1 / math.sqrt(400), rel=0.05)
    assert model.hidden[0].linear.bias.abs().max().item() == 0.0
    bn = initialize(MLP(MLPConfig(norm="batchnorm")), "kaiming", output_scale=0.1)
    assert torch.allclose(bn.head_norm.weight, torch.full((27,), 0.1))


def test_kaiming_gain_follows_the_activation():
    torch.manual_seed(0)
    tanh = initialize(MLP(MLPConfig(norm="none", n_hidden=400, depth=2)), "kaiming")
    relu = initialize(MLP(MLPConfig(norm="none", n_hidden=400, depth=2, activation="relu")), "kaiming")
    assert tanh.hidden[1].linear.weight.std().item() == pytest.approx(5 / 3 / 20, rel=0.02)
    assert relu.hidden[1].linear.weight.std().item() == pytest.approx(math.sqrt(2) / 20, rel=0.02)


def test_naive_is_unit_normal():
    torch.manual_seed(0)
    model = initialize(MLP(MLPConfig(norm="none", n_hidden=400)), "naive")
    assert model.hidden[1].linear.weight.std().item() == pytest.approx(1.0, rel=0.02)


def test_unknown_choices_are_refused():
    with pytest.raises(ValueError, match="unknown norm 'group'.*none, batchnorm, layernorm"):
        MLPConfig(norm="group")
    with pytest.raises(ValueError, match="unknown init 'xavier'"):
        initialize(MLP(MLPConfig()), "xavier")


@pytest.fixture(scope="module")
def names_dm(names_txt):
    return CharDataModule(source="file", path=str(names_txt), seed=42).prepare()


@pytest.mark.parametrize("init,norm,low,high", [
    ("kaiming", "none", math.log(27) - 0.15, math.log(27) + 0.15),
    ("kaiming", "batchnorm", math.log(27) - 0.15, math.log(27) + 0.15),
    ("kaiming", "layernorm", math.log(27) - 0.15, math.log(27) + 0.15),
    ("naive", "none", 10.0, math.inf),
])
def test_initial_loss(names_dm, init, norm, low, high):
    torch.manual_seed(42)
    module = NameGen({"arch": "mlp", "vocab_size": 27, "norm": norm}, names_dm.vocab.to_list(), init={"scheme": init})
    before = {k: v.clone() for k, v in module.model.named_buffers()}
    loss = module.batch_statistics_loss((names_dm.x["val"], names_dm.y["val"]))
    assert low < loss < high
    # measuring the start must not move BatchNorm's running statistics
    assert all(torch.equal(before[k], v) for k, v in module.model.named_buffers())


def test_the_module_saves_plain_hyperparameters_and_loads_from_its_checkpoint(tmp_path):
    """Lightning's own `load_from_checkpoint` rebuilds the module; the file stays weights-only."""
    import lightning as L

    torch.manual_seed(0)
    module = NameGen({"arch": "mlp", "vocab_size": 5, "block_size": 2, "n_embd": 3, "n_hidden": 4, "depth": 2,
                      "norm": "batchnorm"}, list(".abcd"), optimizer={"_target_": "torch.optim.SGD", "lr": 0.1})
    trainer = L.Trainer(max_steps=1, logger=False, enable_progress_bar=False, enable_checkpointing=False,
                        enable_model_summary=False)
    x, y = torch.randint(0, 5, (8, 2)), torch.randint(0, 5, (8,))
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader([(x, y)], batch_size=None))
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    torch.load(path, weights_only=True)  # plain types only
    loaded = NameGen.load_from_checkpoint(path, weights_only=True)
    assert loaded.hparams.model == module.hparams.model and loaded.vocab == list(".abcd")
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), module.state_dict().values()))
    loaded.eval(), module.eval()
    assert torch.equal(loaded(x), module(x))
