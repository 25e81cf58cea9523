"""python -m bftnets.export (--model NAME | --checkpoint RUN.ckpt) --out DIR [--input-size C H W] [--dynamic ...]

Folds BN, folds each BFT to its fastest inference form, writes DIR/NAME.onnx and DIR/NAME.pt, and prints the
onnxruntime / TorchScript max abs difference against the PyTorch model (fails if >= 1e-4 x max(1, max |logit|))."""
import argparse
import sys

import timm
import torch

import bftnets  # noqa: F401  (registers the models)
from bftnets.export import DYNAMIC_CHOICES, export_model


def build_model(args):
    """The model to export and its input size, from --model and/or --checkpoint."""
    from bftnets.training import ConfigError, load_checkpoint, module_from_checkpoint
    if args.checkpoint and not args.checkpoint.endswith(('.pt', '.pth')):
        try:  # a train.py checkpoint names its model, classes, channels and resolution
            checkpoint = load_checkpoint(args.checkpoint)
        except ConfigError as e:
            raise ValueError(f'{e} (plain state_dicts: give a .pt/.pth file with --model)') from e
        module = module_from_checkpoint(checkpoint)
        trained = module.hparams.model
        if args.model and args.model != trained['name']:
            raise ValueError(f"--model {args.model} but {args.checkpoint} holds {trained['name']}; drop --model")
        model = module.ema.module if module.ema is not None else module.net
        args.model = trained['name']
        res = module.hparams.data.get('resolution', model.pretrained_cfg['input_size'][-1])
        return model, tuple(args.input_size or (trained['in_chans'], res, res))
    if not args.model:
        raise ValueError('give --model NAME, or --checkpoint with a checkpoint written by train.py')
    if not timm.is_model(args.model):
        names = ', '.join(n for n in timm.list_models() if 'bft' in n or n.startswith(('mobilenetv1', 'shufflenetv2')))
        raise ValueError(f'unknown model {args.model!r}; bftnets models: {names}')
    kwargs = {} if args.num_classes is None else {'num_classes': args.num_classes}
    if args.input_size is not None:
        kwargs['in_chans'] = args.input_size[0]
    model = timm.create_model(args.model, **kwargs)
    if args.checkpoint:
        model.load_state_dict(torch.load(args.checkpoint, map_location='cpu', weights_only=True))
    return model, tuple(args.input_size or model.pretrained_cfg['input_size'])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog='python -m bftnets.export', description=__doc__.split('\n\n')[1])
    parser.add_argument('--model', default=None, help='a timm model name (bftnets models register on import); '
                        'optional with a train.py checkpoint, which names its model')
    parser.add_argument('--out', required=True, help='output directory')
    parser.add_argument('--input-size', type=int, nargs=3, default=None, metavar=('C', 'H', 'W'),
                        help="default: the model's pretrained_cfg input_size")
    parser.add_argument('--num-classes', type=int, default=None)
    parser.add_argument('--checkpoint', default=None,
                        help='a train.py checkpoint (its EMA weights when it has them) or a plain state_dict file')
    parser.add_argument('--dynamic', nargs='*', default=['batch'],
                        help=f'dynamic input axes, any of {list(DYNAMIC_CHOICES)} (default: batch)')
    parser.add_argument('--dense', choices=['auto', 'always', 'never'], default='auto',
                        help='fold BFTs to dense 1x1 convs: by the cost model (auto), always, never')
    parser.add_argument('--opset', type=int, default=None, help="ONNX opset (default: the installed torch's)")
    args = parser.parse_args(argv)
    try:
        model, input_size = build_model(args)
    except (ValueError, RuntimeError) as e:
        parser.error(str(e))
    try:
        result = export_model(model, args.out, input_size, args.dynamic, args.dense, args.opset, args.model)
    except ValueError as e:
        parser.error(str(e))
    for key, value in result.items():
        print(f'{key}: {value}')
    # 1e-4 absolute for logits up to 1 (any sane model); beyond, float32 rounding scales with the logits
    # (an untrained or barely trained net can output 1e7)
    tolerance = 1e-4 * max(1.0, result['output_scale'])
    ok = result['onnx_max_abs_diff'] < tolerance and result['torchscript_max_abs_diff'] < tolerance
    print(f'parity OK (< {tolerance:.2g})' if ok else f'PARITY FAILED (>= {tolerance:.2g})')
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
