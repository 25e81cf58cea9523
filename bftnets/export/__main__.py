"""python -m bftnets.export --model NAME --out DIR [--input-size C H W] [--dynamic batch spatial] [--dense auto]

Folds BN, folds each BFT to its fastest inference form, writes DIR/NAME.onnx and DIR/NAME.pt, and prints the
onnxruntime / TorchScript max abs difference against the PyTorch model (fails if >= 1e-4)."""
import argparse
import sys

import timm
import torch

import bftnets  # noqa: F401  (registers the models)
from bftnets.export import DYNAMIC_CHOICES, export_model


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog='python -m bftnets.export', description=__doc__.split('\n\n')[1])
    parser.add_argument('--model', required=True, help='a timm model name (bftnets models register on import)')
    parser.add_argument('--out', required=True, help='output directory')
    parser.add_argument('--input-size', type=int, nargs=3, default=None, metavar=('C', 'H', 'W'),
                        help="default: the model's pretrained_cfg input_size")
    parser.add_argument('--num-classes', type=int, default=None)
    parser.add_argument('--checkpoint', default=None, help='state_dict to load (.pt/.pth or a Lightning .ckpt)')
    parser.add_argument('--dynamic', nargs='*', default=['batch'],
                        help=f'dynamic input axes, any of {list(DYNAMIC_CHOICES)} (default: batch)')
    parser.add_argument('--dense', choices=['auto', 'always', 'never'], default='auto',
                        help='fold BFTs to dense 1x1 convs: by the cost model (auto), always, never')
    parser.add_argument('--opset', type=int, default=None, help="ONNX opset (default: the installed torch's)")
    args = parser.parse_args(argv)
    if not timm.is_model(args.model):
        names = ', '.join(n for n in timm.list_models() if 'bft' in n or n.startswith(('mobilenetv1', 'shufflenetv2')))
        parser.error(f'unknown model {args.model!r}; bftnets models: {names}')
    kwargs = {} if args.num_classes is None else {'num_classes': args.num_classes}
    if args.input_size is not None:
        kwargs['in_chans'] = args.input_size[0]
    model = timm.create_model(args.model, **kwargs)
    if args.checkpoint:
        state = torch.load(args.checkpoint, map_location='cpu', weights_only=True)
        state = state.get('state_dict', state)
        state = {k.removeprefix('model.'): v for k, v in state.items()}
        model.load_state_dict(state)
    input_size = tuple(args.input_size or model.pretrained_cfg['input_size'])
    try:
        result = export_model(model, args.out, input_size, args.dynamic, args.dense, args.opset, args.model)
    except ValueError as e:
        parser.error(str(e))
    for key, value in result.items():
        print(f'{key}: {value}')
    ok = result['onnx_max_abs_diff'] < 1e-4 and result['torchscript_max_abs_diff'] < 1e-4
    print('parity OK (< 1e-4)' if ok else 'PARITY FAILED (>= 1e-4)')
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
