"""The timm model contract for every model bftnets registers.

Mirrors what timm's own tests/test_models.py checks for its models (forward, backward, default cfgs,
forward_features / forward_head, reset_classifier, features_only, forward_intermediates, TorchScript, FX),
on small inputs so the default run stays fast. Plus the bftnets specifics: registration without
overwriting, which convs are BFT, the bft_* options and their errors.
"""
import math

import pytest
import timm
import torch
from timm.layers import set_layer_config
from timm.models import FeatureInfo, get_notrace_functions, get_notrace_modules
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

import bftnets
from bftnets import ButterflyTransform
from bftnets.layers.pointwise import convert_pointwise, create_pointwise, is_pointwise_conv
from bftnets.models import list_bftnets_models

MODELS = list_bftnets_models()
BFT_MODELS = [m for m in MODELS if m.endswith('_bft')]
BASELINES = [m for m in MODELS if not m.endswith('_bft')]
SIZE = 64  # input side for the fast checks: every model reduces by 32, so features are 2x2
BATCH = 2


def _create(name, **kwargs):
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, **kwargs)


def _assert_close(actual, expected, rtol=1e-4):
    """Equal up to float rounding, relative to the tensor's norm (random-init activations can be huge)."""
    assert actual.shape == expected.shape
    assert (actual - expected).norm() <= rtol * expected.norm(), float((actual - expected).norm() / expected.norm())


def _bfts(model):
    return [m for m in model.modules() if isinstance(m, ButterflyTransform)]


def test_registered_names():
    assert sorted(MODELS) == sorted([
        'mobilenetv1_025', 'mobilenetv1_050', 'shufflenetv2_050', 'shufflenetv2_100', 'mobilenetv3_small_035',
        'mobilenetv1_100_bft', 'mobilenetv1_200_bft', 'shufflenetv2_125_bft', 'mobilenetv3_small_050_bft',
        'mobilenetv3_small_100_bft', 'mobilenetv3_large_100_bft'])
    for name in MODELS:
        assert timm.is_model(name)
        assert timm.models.model_entrypoint(name).__module__.startswith('bftnets.models.')
    # timm's own models are untouched
    assert timm.models.model_entrypoint('mobilenetv3_small_050').__module__ == 'timm.models.mobilenetv3'


def test_register_refuses_to_overwrite_timm():
    from bftnets.models._helpers import register_model

    def mobilenetv3_small_100(pretrained=False, **kwargs):
        raise AssertionError('never called')

    with pytest.raises(RuntimeError, match="overwrite the model 'mobilenetv3_small_100'"):
        register_model(mobilenetv3_small_100)
    assert timm.models.model_entrypoint('mobilenetv3_small_100').__module__ == 'timm.models.mobilenetv3'


@pytest.mark.parametrize('name', MODELS)
def test_forward_backward(name):
    """timm test_model_forward / test_model_backward (num_classes override, every parameter gets a gradient),
    and grad checkpointing leaves the output unchanged."""
    model = _create(name, num_classes=42).train()
    x = torch.randn(BATCH, 3, SIZE, SIZE)
    out = model(x)
    assert out.shape == (BATCH, 42)
    assert torch.isfinite(out).all()
    out.mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f'no gradient for {missing}'

    model.eval()
    with torch.no_grad():
        ref = model(x)
        model.set_grad_checkpointing()
        _assert_close(model(x), ref)


@pytest.mark.parametrize('name', MODELS)
def test_default_cfg_and_head(name):
    """timm test_model_default_cfgs: pretrained_cfg fields, forward_features vs pool_size and num_features,
    forward_head(pre_logits) vs head_hidden_size, reset_classifier, classifier / first_conv names."""
    model = _create(name).eval()
    cfg = model.pretrained_cfg
    assert cfg['url'] == '' and not cfg.get('hf_hub_id'), 'no weights exist for bftnets models'
    assert cfg['input_size'] == (3, 224, 224) and cfg['num_classes'] == 1000
    assert cfg['pool_size'] == (7, 7) and 0 < cfg['crop_pct'] <= 1 and cfg['interpolation']
    assert len(cfg['mean']) == len(cfg['std']) == 3
    state = model.state_dict()
    assert cfg['first_conv'] + '.weight' in state
    assert cfg['classifier'] + '.weight' in state
    assert model.get_classifier() is model.get_submodule(cfg['classifier'])
    assert model.num_classes == 1000 and model.num_features > 0 and model.head_hidden_size > 0

    x = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape == (1, model.num_features, SIZE // 32, SIZE // 32)
        pre = model.forward_head(feats, pre_logits=True)
        assert pre.shape == (1, model.head_hidden_size)
        assert model.forward_head(feats).shape == (1, 1000)

        model.reset_classifier(0)
        assert model.num_classes == 0
        _assert_close(model(x), pre)
        model.reset_classifier(7)
        assert model(x).shape == (1, 7)


@pytest.mark.parametrize('name', [n for n in MODELS if not n.startswith('mobilenetv3')])
def test_unpooled_forward(name):
    """reset_classifier(0, '') and num_classes=0, global_pool='' give the unpooled features (timm skips
    this for MobileNetV3, whose head conv runs after pooling)."""
    x = torch.randn(1, 3, SIZE, SIZE)
    model = _create(name).eval()
    model.reset_classifier(0, '')
    with torch.no_grad():
        assert model(x).shape == (1, model.num_features, SIZE // 32, SIZE // 32)
        model = _create(name, num_classes=0, global_pool='').eval()
        assert model(x).shape == (1, model.num_features, SIZE // 32, SIZE // 32)


@pytest.mark.parametrize('name', MODELS)
def test_in_chans_num_classes(name):
    model = _create(name, num_classes=10, in_chans=1).eval()
    first = model.get_submodule(model.pretrained_cfg['first_conv'])
    assert first.in_channels == 1
    with torch.no_grad():
        assert model(torch.randn(BATCH, 1, 32, 32)).shape == (BATCH, 10)


def _check_features(outputs, channels, reductions, size):
    assert len(outputs) == len(channels) == len(reductions) >= 3
    for out, chs, red in zip(outputs, channels, reductions):
        assert out.shape[:2] == (1, chs)
        assert out.shape[-1] == out.shape[-2] <= math.ceil(size / red) + 1
        assert out.shape[-1] >= size // red
        assert torch.isfinite(out).all()


@pytest.mark.parametrize('feature_cls', [None, 'getter', 'fx'])
@pytest.mark.parametrize('name', MODELS)
def test_features_only(name, feature_cls):
    """timm test_model_forward_features and test_model_forward_intermediates_features, plus timm's FX
    feature extraction (feature_cls='fx', ButterflyTransform as a leaf)."""
    kwargs = {'feature_cls': feature_cls} if feature_cls else {}
    model = _create(name, features_only=True, **kwargs).eval()
    with torch.no_grad():
        outputs = model(torch.randn(1, 3, SIZE, SIZE))
    _check_features(outputs, model.feature_info.channels(), model.feature_info.reduction(), SIZE)
    if name.endswith('_bft'):
        assert _bfts(model), 'the features_only model lost its BFT layers'


def test_features_at_expansion_keep_hooks_on_bft():
    """feature_location='expansion' hooks the input of every block's pointwise conv; the conversion to BFT
    happens after timm registered those hooks, so they must carry over."""
    model = _create('mobilenetv1_100_bft', features_only=True, feature_location='expansion').eval()
    assert _bfts(model)
    with torch.no_grad():
        outputs = model(torch.randn(1, 3, SIZE, SIZE))
    assert [o.shape[1] for o in outputs] == model.feature_info.channels() == [32, 128, 256, 512, 1024]


@pytest.mark.parametrize('name', MODELS)
def test_forward_intermediates(name):
    """timm test_model_forward_intermediates: one intermediate per feature_info entry, final output equals
    forward_features, also with grad checkpointing."""
    model = _create(name).eval()
    info = FeatureInfo(model.feature_info, len(model.feature_info))
    x = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        final, intermediates = model.forward_intermediates(x)
        _check_features(intermediates, info.channels(), info.reduction(), SIZE)
        _assert_close(final, model.forward_features(x))
        model.set_grad_checkpointing()
        final2, _ = model.forward_intermediates(x)
        _assert_close(final2, final)
        only = model.forward_intermediates(x, indices=2, intermediates_only=True)
        assert [o.shape for o in only] == [o.shape for o in intermediates[-2:]]


@pytest.mark.parametrize('name', MODELS)
def test_torchscript(name):
    with set_layer_config(scriptable=True):
        model = _create(name).eval()
    x = torch.randn(1, 3, SIZE, SIZE)
    scripted = torch.jit.script(model)
    with torch.no_grad():
        out = scripted(x)
        assert out.shape == (1, 1000)
        _assert_close(out, model(x))


def _fx_model(model):
    tracer_kwargs = dict(leaf_modules=get_notrace_modules(), autowrap_functions=get_notrace_functions())
    train_nodes, eval_nodes = get_graph_node_names(model, tracer_kwargs=tracer_kwargs)
    return create_feature_extractor(model, train_return_nodes=[train_nodes[-1]],
                                    eval_return_nodes=[eval_nodes[-1]], tracer_kwargs=tracer_kwargs)


@pytest.mark.parametrize('name', MODELS)
def test_fx(name):
    """timm test_model_forward_fx / test_model_backward_fx: torch.fx traces the model (ButterflyTransform
    is a registered leaf), the traced graph gives the same output and trains."""
    assert ButterflyTransform in get_notrace_modules()
    model = _create(name).eval()
    x = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        ref = model(x)
        fx_model = _fx_model(model)
        fx_out = torch.cat(tuple(fx_model(x).values()))
    assert torch.equal(fx_out, ref)

    model = _create(name, num_classes=42).train()
    fx_model = _fx_model(model)
    out = torch.cat(tuple(fx_model(torch.randn(BATCH, 3, SIZE, SIZE)).values()))
    assert out.shape == (BATCH, 42)
    out.mean().backward()
    assert all(p.grad is not None for p in fx_model.parameters())


@pytest.mark.parametrize('coarse', [True, False])
@pytest.mark.parametrize('name', MODELS)
def test_group_matcher(name, coarse):
    """Layer-wise lr decay support: every parameter falls in a group, the stem first, the classifier last."""
    model = _create(name)
    groups = timm.models.group_parameters(model, model.group_matcher(coarse=coarse))
    assert sum(len(v) for v in groups.values()) == len(list(model.named_parameters()))
    ordered = [groups[k] for k in sorted(groups)]
    assert any(n.startswith('conv_stem') for n in ordered[0])
    assert model.pretrained_cfg['classifier'] + '.weight' in ordered[-1]


# --- which convs are BFT ----------------------------------------------------------------------------------

def _dense_pointwise(model):
    return [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and tuple(m.kernel_size) == (1, 1)]


def test_baselines_have_no_bft():
    for name in BASELINES:
        assert not _bfts(_create(name)), name


def test_mobilenetv1_bft_replaces_every_pointwise():
    model = _create('mobilenetv1_100_bft')
    assert _dense_pointwise(model) == []
    assert len(_bfts(model)) == 13
    assert model.num_features == 1024 and isinstance(model.conv_head, nn.Identity)  # paper: no head conv
    assert model.classifier.in_features == 1024


def test_mobilenetv3_bft_layers():
    model = _create('mobilenetv3_small_050_bft')
    dense = _dense_pointwise(model)
    assert dense and all('.se.' in n for n in dense), dense  # only squeeze-excitation stays dense
    assert isinstance(model.conv_head, ButterflyTransform)
    assert isinstance(model.blocks[5][0].conv, ButterflyTransform)  # the 1x1 ConvBnAct (576)
    assert model.conv_stem.out_channels == 8  # stem scaled with the width, as in the TF reference
    assert isinstance(model.classifier, nn.Linear)


def test_shufflenetv2_bft_layers():
    model = _create('shufflenetv2_125_bft')
    first = model.stages[0][0]
    # the two 1x1 convs reading the 24-channel stem output stay dense, all others are BFT
    assert sorted(_dense_pointwise(model)) == ['stages.0.0.branch1.2', 'stages.0.0.branch2.0']
    assert first.branch2[0].in_channels == first.branch1[2].in_channels == 24
    assert isinstance(model.conv_head, ButterflyTransform)
    assert [s[-1].branch2[-2].out_channels * 2 for s in model.stages] == [128, 256, 1280]
    assert model.num_features == 1024


@pytest.mark.parametrize('name', BFT_MODELS)
def test_bft_options_reach_every_layer(name):
    model = _create(name, bft_base=2, bft_residual=False, bft_inner_act=True)
    bfts = _bfts(model)
    assert bfts
    assert all(m.base == 2 and m.residual is False and m.inner_act is True for m in bfts)
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 1000)


@pytest.mark.parametrize('name', BASELINES)
def test_bft_options_rejected_by_baselines(name):
    with pytest.raises(ValueError, match='bft'):
        _create(name, bft_base=2)


# --- the pointwise factory --------------------------------------------------------------------------------

def test_create_pointwise():
    conv = create_pointwise(16, 24)
    assert isinstance(conv, nn.Conv2d) and conv.bias is None and tuple(conv.kernel_size) == (1, 1)
    bft = create_pointwise(16, 24, 'bft', base=2, residual=False)
    assert isinstance(bft, ButterflyTransform) and bft.base == 2 and not bft.residual
    assert bft(torch.randn(2, 16, 5, 5)).shape == (2, 24, 5, 5)
    with pytest.raises(ValueError, match="one of \\('conv', 'bft'\\)"):
        create_pointwise(16, 24, 'dense')
    with pytest.raises(ValueError, match='BFT options'):
        create_pointwise(16, 24, 'conv', base=2)


def test_convert_pointwise_only_swaps_exact_pointwise_convs():
    model = nn.Sequential(
        nn.Conv2d(8, 16, 1, bias=False),  # swapped
        nn.Conv2d(16, 16, 1, bias=True),  # bias: kept
        nn.Conv2d(16, 16, 3, padding=1, bias=False),  # 3x3: kept
        nn.Conv2d(16, 16, 1, groups=4, bias=False),  # grouped: kept
        nn.Conv2d(16, 16, 1, stride=2, bias=False),  # strided: kept
        nn.Sequential(nn.Conv2d(16, 32, 1, bias=False)),  # nested: swapped unless skipped
    ).eval()
    hook_calls = []
    model[0].register_forward_hook(lambda *args: hook_calls.append(1))
    convert_pointwise(model, {'base': 2}, skip=('5.*',))
    kinds = [type(m).__name__ for m in list(model)[:5]] + [type(model[5][0]).__name__]
    assert kinds == ['ButterflyTransform', 'Conv2d', 'Conv2d', 'Conv2d', 'Conv2d', 'Conv2d']
    assert model[0].base == 2 and (model[0].in_channels, model[0].out_channels) == (8, 16)
    assert not model[0].training
    model(torch.randn(1, 8, 4, 4))
    assert hook_calls == [1], 'forward hooks of the replaced conv must carry over'
    convert_pointwise(model)
    assert isinstance(model[5][0], ButterflyTransform)
    assert is_pointwise_conv(nn.Conv2d(3, 3, 1, bias=False)) and not is_pointwise_conv(nn.Linear(3, 3))


def test_import_registers():
    assert bftnets.models is not None and timm.is_model('shufflenetv2_125_bft')
