import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from namegen.errors import ConfigError
from namegen.transformer import Transformer, TransformerConfig, initialize_transformer


@pytest.fixture(autouse=True)
def one_thread():
    # the machine's cores are shared; restore the setting so other test modules see no change
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def expected_params(V, T, L, C, norm):
    ln = 2 * C if norm == "layernorm" else 0  # gain and bias
    attn = (C * 3 * C + 3 * C) + (C * C + C)  # c_attn, c_proj
    mlp = (C * 4 * C + 4 * C) + (4 * C * C + C)  # c_fc, c_proj
    block = 2 * ln + attn + mlp
    return V * C + T * C + L * block + ln + C * V  # wte, wpe, blocks, ln_f, lm_head (no bias)


@pytest.mark.parametrize("norm", ["layernorm", "none"])
@pytest.mark.parametrize("V,T,L,H,C", [(27, 16, 4, 4, 64), (11, 5, 2, 3, 24)])
def test_parameter_count_follows_the_architecture(norm, V, T, L, H, C):
    cfg = TransformerConfig(vocab_size=V, block_size=T, n_layer=L, n_head=H, n_embd=C, norm=norm)
    assert n_params(Transformer(cfg)) == expected_params(V, T, L, C, norm)


def test_default_is_makemores_size():
    assert n_params(Transformer(TransformerConfig())) == 204_544  # makemore reports 0.20M


@pytest.mark.parametrize("norm", ["layernorm", "none"])
@pytest.mark.parametrize("T", [1, 7, 16])
def test_logits_shape(norm, T):
    model = Transformer(TransformerConfig(norm=norm))
    assert model(torch.randint(0, 27, (3, T))).shape == (3, T, 27)
    assert model.cfg.block_size == 16


def test_longer_than_block_size_is_refused():
    model = Transformer(TransformerConfig(block_size=8))
    with pytest.raises(ValueError, match="length 9 is longer than model.block_size=8"):
        model(torch.zeros(2, 9, dtype=torch.long))


@pytest.mark.parametrize("norm", ["layernorm", "none"])
@pytest.mark.parametrize("init", ["kaiming", "pytorch"])
def test_causal(norm, init):
    torch.manual_seed(0)
    model = initialize_transformer(Transformer(TransformerConfig(norm=norm)), init).eval()
    idx = torch.randint(0, 27, (4, 16))
    before = model(idx)
    for t in (0, 5, 15):
        changed = idx.clone()
        changed[:, t] = (changed[:, t] + 1 + torch.arange(4)) % 27  # a different token in every row
        after = model(changed)
        assert torch.equal(after[:, :t], before[:, :t])  # exactly: the past never sees the future
        assert not torch.allclose(after[:, t], before[:, t])  # and position t does see its own token


def test_batchnorm_is_refused_with_the_reason():
    reason = "batchnorm breaks .*causality.*later positions.*use model.norm=layernorm or model.norm=none"
    with pytest.raises(ConfigError, match=reason) as e:
        TransformerConfig(norm="batchnorm")
    assert "\n" not in str(e.value)


def test_n_head_must_divide_n_embd():
    with pytest.raises(ConfigError, match=r"model.n_head=5 must divide model.n_embd=64; .*1, 2, 4, 8, 16, 32, 64$"):
        TransformerConfig(n_head=5)


@pytest.mark.parametrize("field,value", [("n_layer", 0), ("n_head", -1), ("block_size", 2.0), ("n_embd", True)])
def test_positive_ints(field, value):
    with pytest.raises(ConfigError, match=f"model.{field}={value!r} must be a positive integer"):
        TransformerConfig(**{field: value})


def test_unknown_choices_are_refused():
    with pytest.raises(ConfigError, match="unknown norm 'rms'; choose one of none, layernorm"):
        TransformerConfig(norm="rms")
    with pytest.raises(ConfigError, match="unknown activation 'swish'; choose one of gelu, relu, tanh"):
        TransformerConfig(activation="swish")
    with pytest.raises(ConfigError, match="unknown init 'xavier'"):
        initialize_transformer(Transformer(TransformerConfig()), "xavier")


def first_loss(model):
    idx = torch.randint(0, 27, (64, 16))
    y = torch.randint(0, 27, (64, 16))
    with torch.no_grad():
        return F.cross_entropy(model(idx).reshape(-1, 27), y.reshape(-1), ignore_index=-1).item()


@pytest.mark.parametrize("norm", ["layernorm", "none"])
def test_kaiming_starts_at_log_v_and_naive_far_above(norm):
    torch.manual_seed(0)
    kaiming = initialize_transformer(Transformer(TransformerConfig(norm=norm)), "kaiming")
    naive = initialize_transformer(Transformer(TransformerConfig(norm=norm)), "naive")
    assert first_loss(kaiming) == pytest.approx(math.log(27), abs=0.05)
    assert first_loss(naive) > 2 * math.log(27)


def test_kaiming_weight_std_is_gain_over_sqrt_fan_in():
    torch.manual_seed(0)
    cfg = TransformerConfig(n_layer=2, n_embd=128, activation="relu", norm="none")
    model = initialize_transformer(Transformer(cfg), "kaiming", output_scale=0.1)
    block, residual = model.blocks[1], 1 / math.sqrt(2 * cfg.n_layer)
    assert block.attn.c_attn.weight.std().item() == pytest.approx(1 / math.sqrt(128), rel=0.02)
    assert block.mlp.c_fc.weight.std().item() == pytest.approx(math.sqrt(2) / math.sqrt(128), rel=0.02)
    assert block.attn.c_proj.weight.std().item() == pytest.approx(residual / math.sqrt(128), rel=0.03)
    assert block.mlp.c_proj.weight.std().item() == pytest.approx(residual / math.sqrt(512), rel=0.03)
    assert model.lm_head.weight.std().item() == pytest.approx(0.1 / math.sqrt(128), rel=0.05)
    assert block.mlp.c_fc.bias.abs().max().item() == 0.0
    explicit = initialize_transformer(Transformer(cfg), "kaiming", gain=3.0)
    assert explicit.blocks[0].mlp.c_fc.weight.std().item() == pytest.approx(3 / math.sqrt(128), rel=0.02)


def test_naive_is_unit_normal_and_layernorm_is_identity():
    torch.manual_seed(0)
    model = initialize_transformer(Transformer(TransformerConfig(n_embd=128)), "naive")
    assert model.blocks[0].mlp.c_fc.weight.std().item() == pytest.approx(1.0, rel=0.02)
    assert model.wte.weight.std().item() == pytest.approx(1.0, rel=0.05)
    ln = model.blocks[0].ln_1
    assert torch.equal(ln.weight, torch.ones(128)) and torch.equal(ln.bias, torch.zeros(128))


def test_norm_none_is_identity_everywhere():
    model = Transformer(TransformerConfig(norm="none"))
    assert not any(isinstance(m, nn.LayerNorm) for m in model.modules())


def test_hooks_see_the_attention_logits_and_the_activation():
    torch.manual_seed(0)
    model = initialize_transformer(Transformer(TransformerConfig(n_layer=2)), "kaiming")
    seen = {}
    model.blocks[1].attn.scores.register_forward_hook(lambda m, a, out: seen.__setitem__("scores", out))
    acts = [m for m in model.modules() if isinstance(m, nn.GELU)]
    acts[0].register_forward_hook(lambda m, a, out: seen.__setitem__("act", out))
    model(torch.randint(0, 27, (3, 10)))
    assert len(acts) == 2
    assert seen["scores"].shape == (3, 4, 10, 10) and torch.isfinite(seen["scores"]).all()
    assert seen["act"].shape == (3, 10, 256)
    assert 0.5 < seen["scores"].std().item() < 2  # kaiming: unit-scale logits, softmax not saturated
