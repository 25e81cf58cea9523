"""Deployment export: BN folding, BFT folding (dense or factored), ONNX + TorchScript parity, clear errors."""
import pytest
import timm
import torch
from torch import nn

import bftnets  # noqa: F401
from bftnets import ButterflyTransform
from bftnets.export import FrozenButterfly, export_model, fold_for_inference


def small_net():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 256, 3, padding=1, bias=False), nn.BatchNorm2d(256), nn.ReLU(),
        ButterflyTransform(256, 256), nn.BatchNorm2d(256), nn.ReLU(),  # wide: stays factored
        ButterflyTransform(256, 16), nn.BatchNorm2d(16), nn.ReLU(),  # 256 x 16 dense is cheaper than N = 256 passes
        ButterflyTransform(16, 16), nn.BatchNorm2d(16),  # small: a dense GEMM is cheaper
    )
    for m in net.modules():  # non-trivial BN statistics, so a wrong fold shows
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1), m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5), m.bias.data.uniform_(-0.5, 0.5)
    return net.eval()


def test_fold_rules_and_equivalence():
    net = small_net()
    folded = fold_for_inference(net, (3, 16, 16))
    kinds = [type(m).__name__ for m in folded]
    # conv + BN folded; the square 256 BFT frozen factored with its BN kept; the others became dense convs
    assert kinds == ['Conv2d', 'Identity', 'ReLU', 'FrozenButterfly', 'BatchNorm2d', 'ReLU',
                     'Conv2d', 'Identity', 'ReLU', 'Conv2d', 'Identity'], kinds
    assert folded[0].bias is not None and folded[6].bias is not None and folded[9].bias is not None
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(folded(x), net(x), rtol=1e-4, atol=1e-4)
    always = fold_for_inference(net, (3, 16, 16), dense='always')
    assert not any(isinstance(m, (FrozenButterfly, ButterflyTransform, nn.BatchNorm2d)) for m in always.modules())
    torch.testing.assert_close(always(x), net(x), rtol=1e-4, atol=1e-4)


def test_export_small_net_onnx_and_torchscript_parity(tmp_path):
    result = export_model(small_net(), str(tmp_path), (3, 16, 16), name='small')
    assert result['onnx_max_abs_diff'] < 1e-4 and result['torchscript_max_abs_diff'] < 1e-4
    assert result['opset'] >= 17 and result['factored_bfts'] == 1
    assert (tmp_path / 'small.onnx').stat().st_size > 0 and (tmp_path / 'small.pt').stat().st_size > 0
    import onnxruntime as ort  # the batch axis is dynamic
    session = ort.InferenceSession(str(tmp_path / 'small.onnx'), providers=['CPUExecutionProvider'])
    assert session.run(None, {'input': torch.randn(5, 3, 16, 16).numpy()})[0].shape == (5, 16, 16, 16)


@pytest.mark.parametrize('kwargs,message', [
    (dict(dynamic=('channels',)), r"cannot export with dynamic \['channels'\].*channel counts are fixed"),
    (dict(input_size=(1, 16, 16)), 'the model takes 3 input channels, the input size asks for 1'),
    (dict(input_size=(3, 16)), r'input_size must be \(channels, height, width\)'),
])
def test_unsupported_inputs_fail_clearly(tmp_path, kwargs, message):
    args = dict(input_size=(3, 16, 16), dynamic=('batch',))
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        export_model(small_net(), str(tmp_path), **args)
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_cli_rejects_unknown_model(capsys):
    from bftnets.export.__main__ import main
    with pytest.raises(SystemExit):
        main(['--model', 'no_such_net', '--out', '/tmp/unused'])
    assert "unknown model 'no_such_net'" in capsys.readouterr().err


def test_cli_exports_a_train_py_checkpoint(make_cfg, tmp_path, capsys):
    """The deployment path: train.py writes a checkpoint, the export command reads its model, classes,
    channels and resolution from it and reproduces its logits."""
    from bftnets.export.__main__ import main
    from conftest import TINY
    from train import train
    report = train(make_cfg(TINY + ['model=mobilenetv3_bft', 'trainer.limit_train_batches=1']))
    assert main(['--checkpoint', report['best_ckpt'], '--out', str(tmp_path / 'export')]) == 0
    out = capsys.readouterr().out
    assert 'parity OK' in out and (tmp_path / 'export' / 'mobilenetv3_small_050_bft.onnx').is_file()
    with pytest.raises(SystemExit):  # a checkpoint of one model is not exported as another
        main(['--checkpoint', report['best_ckpt'], '--model', 'mobilenetv1_025', '--out', str(tmp_path / 'x')])
    assert 'holds mobilenetv3_small_050_bft' in capsys.readouterr().err


BFTNETS_MODELS = ['mobilenetv1_025', 'mobilenetv1_050', 'mobilenetv1_100_bft', 'mobilenetv1_200_bft',
                  'shufflenetv2_050', 'shufflenetv2_100', 'shufflenetv2_125_bft', 'mobilenetv3_small_035',
                  'mobilenetv3_small_050_bft', 'mobilenetv3_small_100_bft', 'mobilenetv3_large_100_bft']


@pytest.mark.slow
@pytest.mark.parametrize('name', BFTNETS_MODELS)
def test_every_registered_model_exports_with_parity(tmp_path, name):
    assert timm.is_model(name)
    torch.manual_seed(0)
    model = timm.create_model(name)
    for m in model.modules():  # BN statistics of real activations (as after training), so outputs are O(1)
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(8, 3, 128, 128))
    model.eval()
    result = export_model(model, str(tmp_path), (3, 128, 128), name=name)
    # 1e-4 for logits of order 1; random classifiers still give logits up to ~40 (mobilenetv3_large_100_bft),
    # where float32 rounding over ~60 layers alone reaches ~1e-4: the bound scales with the largest logit,
    # as in the export command (a wrong fold is off by O(1), not by 1e-4)
    tolerance = 1e-4 * max(1.0, result['output_scale'])
    assert result['onnx_max_abs_diff'] < tolerance, result
    assert result['torchscript_max_abs_diff'] < tolerance, result
