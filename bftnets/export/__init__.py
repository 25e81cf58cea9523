"""Deployment export: fold BatchNorm, fold each BFT to its fastest inference form, write ONNX and TorchScript,
and check onnxruntime against PyTorch.

Folding rules (inference, eval statistics):

* ``Conv2d -> BatchNorm``: the BN is folded into the conv's weight and a bias (torch's ``fuse_conv_bn_eval``);
  the BN module is replaced by its activation (timm's ``BatchNormAct2d``) or removed.
* ``ButterflyTransform -> BatchNorm``: if one dense GEMM is cheaper than the butterfly passes at that layer's
  input size (the plan cost model: small widths, e.g. n <= 64 at batch 1), the BFT becomes a 1x1 ``Conv2d``
  with ``to_dense()`` as its weight and the BN folded in, exactly like a conv. Otherwise the BFT stays
  factored (O(n log n)) as a :class:`FrozenButterfly` with its merged execution factors precomputed as
  buffers, and the BN stays a separate per-channel affine: the paper's first-to-last residual
  (``B x + x``) means a BN scale cannot be pushed into the butterfly factors without also scaling the skip,
  so folding it would add the same multiply-add back as a separate op.

Export refuses, with a message saying why, inputs it cannot honour: dynamic channel counts (the weights fix
them), an input size whose channel count does not match the model's first conv, unknown model names.
"""
import copy
import os
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from bftnets.layers.butterfly import ButterflyTransform
from bftnets.ops import butterfly as F_bft
from bftnets.ops.plan import CONSTANTS, DEFAULT_CONSTANTS, candidate_groups, plan_cost

__all__ = ['FrozenButterfly', 'fold_for_inference', 'export_onnx', 'export_torchscript', 'onnx_max_abs_diff',
           'export_model', 'DYNAMIC_CHOICES']

DYNAMIC_CHOICES = ('batch', 'spatial')


class FrozenButterfly(nn.Module):
    """An inference-only ButterflyTransform: the plan's merged execution factors precomputed as buffers."""

    def __init__(self, bft: ButterflyTransform, groups: List[int]):
        super().__init__()
        if len(groups) < 2:
            raise ValueError('FrozenButterfly runs column passes; a one-group plan is exported as a dense Conv2d')
        self.in_channels, self.out_channels, self.residual = bft.in_channels, bft.out_channels, bft.residual
        self.groups = list(groups)
        with torch.no_grad():
            factors = F_bft.grouped_factors(bft.weight.detach(), bft.radices, groups)
        self.factors = nn.ParameterList([nn.Parameter(f.clone(), requires_grad=False) for f in factors])

    def forward(self, x: Tensor) -> Tensor:
        batch, _, height, width = x.shape
        factors: List[Tensor] = [f for f in self.factors]
        y = F_bft.column_butterfly(x.flatten(2).transpose(1, 2), factors, self.out_channels, self.residual)
        return y.transpose(1, 2).reshape(batch, self.out_channels, height, width)

    def extra_repr(self) -> str:
        return f'{self.in_channels}, {self.out_channels}, groups={self.groups}, residual={self.residual}'


def _dense_is_faster(bft: ButterflyTransform, rows: int) -> Tuple[bool, List[int]]:
    """Cost model at batch-1 inference: one (out, in) GEMM vs the best column plan."""
    _, call_cost = CONSTANTS.get('cpu', DEFAULT_CONSTANTS)
    best = candidate_groups(bft.radices, rows, 'cpu', False, 1)[0]
    if len(best) == 1:
        best = candidate_groups(bft.radices, rows, 'cpu', False, 2)[1] if bft.num_layers > 1 else best
    dense = rows * bft.in_channels * bft.out_channels + call_cost
    return dense <= plan_cost(bft.radices, best, rows, 'cpu', False), best


def _set_module(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, attr = name.rpartition('.')
    setattr(root.get_submodule(parent_name) if parent_name else root, attr, module)


def _bn_replacement(bn: nn.Module) -> nn.Module:
    """What is left of a BN once its affine is folded away: timm's BatchNormAct2d keeps drop + act."""
    if hasattr(bn, 'act') and hasattr(bn, 'drop'):
        return nn.Sequential(bn.drop, bn.act)
    return nn.Identity()


def _producer_bn_pairs(model: nn.Module, x: Tensor) -> Tuple[List[Tuple[str, str]], Dict[str, int]]:
    """(producer, bn) module names where a Conv2d / BFT output is the input of exactly one module, a BN;
    and the rows (H*W) every BFT sees, from one forward pass with hooks."""
    names = {m: n for n, m in model.named_modules()}
    produced: Dict[int, str] = {}
    consumers: Dict[int, List[str]] = {}
    rows: Dict[str, int] = {}
    keep: List[Tensor] = []  # keep tensors alive so their ids are not reused

    def pre_hook(module, inputs):
        for t in inputs:
            if isinstance(t, Tensor):
                consumers.setdefault(id(t), []).append(names[module])
                keep.append(t)

    def producer_hook(module, inputs, output):
        produced[id(output)] = names[module]
        keep.append(output)
        if isinstance(module, ButterflyTransform):
            rows[names[module]] = inputs[0].shape[2] * inputs[0].shape[3]

    handles = [m.register_forward_pre_hook(pre_hook) for m in model.modules() if m is not model]
    handles += [m.register_forward_hook(producer_hook) for m in model.modules()
                if isinstance(m, (nn.Conv2d, ButterflyTransform))]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    pairs = []
    for tensor_id, producer in produced.items():
        users = consumers.get(tensor_id, [])
        # a module's children also see its input: count only direct consumers that are BNs
        if len(users) == 1 and isinstance(model.get_submodule(users[0]), nn.BatchNorm2d):
            pairs.append((producer, users[0]))
    return pairs, rows


def _fold_bn_into_dense(weight: Tensor, bias: Optional[Tensor], bn: nn.BatchNorm2d) -> Tuple[Tensor, Tensor]:
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps) if bn.affine else 1 / torch.sqrt(bn.running_var + bn.eps)
    shift = (bn.bias if bn.affine else 0) - bn.running_mean * scale
    if bias is not None:
        shift = shift + bias * scale
    return weight * scale.reshape(-1, *([1] * (weight.dim() - 1))), shift


@torch.no_grad()
def fold_for_inference(model: nn.Module, input_size: Sequence[int] = (3, 224, 224), dense: str = 'auto',
                       check: bool = True) -> nn.Module:
    """A folded eval copy of ``model`` (see the module docstring). ``dense``: ``'auto'`` (cost model),
    ``'always'`` (every BFT becomes a dense 1x1 conv) or ``'never'`` (every BFT stays factored).
    ``check`` compares the folded model with the original on a random input (max abs diff < 1e-4)."""
    if dense not in ('auto', 'always', 'never'):
        raise ValueError(f"dense must be 'auto', 'always' or 'never', got {dense!r}")
    model = copy.deepcopy(model).eval()
    x = torch.randn(1, *input_size)
    reference = model(x)
    pairs, rows = _producer_bn_pairs(model, x)
    bn_of = dict(pairs)
    for name, module in list(model.named_modules()):
        if isinstance(module, ButterflyTransform):
            faster, groups = _dense_is_faster(module, rows.get(name, 1))
            bn = model.get_submodule(bn_of[name]) if name in bn_of else None
            if module.num_layers > 1 and (dense == 'never' or (dense == 'auto' and not faster)):
                _set_module(model, name, FrozenButterfly(module, groups))
                continue
            conv = nn.Conv2d(module.in_channels, module.out_channels, 1, bias=bn is not None)
            # the product of L factors and the BN scale in float64, rounded to float32 once
            weight = copy.deepcopy(module).double().to_dense().reshape(module.out_channels, module.in_channels, 1, 1)
            if bn is not None:
                weight, bias = _fold_bn_into_dense(weight, None, copy.deepcopy(bn).double())
                conv.bias.copy_(bias)
                _set_module(model, bn_of[name], _bn_replacement(bn))
            conv.weight.copy_(weight)
            _set_module(model, name, conv.to(module.weight.dtype))
        elif isinstance(module, nn.Conv2d) and name in bn_of:
            bn = model.get_submodule(bn_of[name])
            weight, bias = _fold_bn_into_dense(module.weight.double(), None if module.bias is None else
                                               module.bias.double(), copy.deepcopy(bn).double())
            fused = copy.deepcopy(module)
            fused.weight = nn.Parameter(weight.to(module.weight.dtype))
            fused.bias = nn.Parameter(bias.to(module.weight.dtype))
            _set_module(model, name, fused)
            _set_module(model, bn_of[name], _bn_replacement(bn))
    if check:  # relative to the output scale: untrained nets can have huge logits, float32 rounds them
        diff = (model(x) - reference).abs().max().item()
        scale = max(1.0, reference.abs().max().item())
        if diff > 1e-4 * scale:
            raise RuntimeError(f'folding changed the output by {diff:.2e} (output scale {scale:.2e}): a BN was '
                               f'folded across a branch; please report the model')
    return model


def _check_input(model: nn.Module, input_size: Sequence[int], dynamic: Sequence[str]) -> None:
    bad = [d for d in dynamic if d not in DYNAMIC_CHOICES]
    if bad:
        raise ValueError(f'cannot export with dynamic {bad}: only {list(DYNAMIC_CHOICES)} may be dynamic '
                         f'(channel counts are fixed by the conv and BFT weights)')
    if len(input_size) != 3 or min(input_size) < 1:
        raise ValueError(f'input_size must be (channels, height, width) with positive sizes, got {tuple(input_size)}')
    first = next((m for m in model.modules() if isinstance(m, (nn.Conv2d, ButterflyTransform))), None)
    expected = getattr(first, 'in_channels', None)
    if expected is not None and expected != input_size[0]:
        raise ValueError(f'the model takes {expected} input channels, the input size asks for {input_size[0]}: '
                         f'create it with in_chans={input_size[0]} or pass --input-size {expected} H W')


def export_onnx(model: nn.Module, path: str, input_size: Sequence[int], dynamic: Sequence[str] = ('batch',),
                opset: Optional[int] = None) -> str:
    """Export an eval (folded) model to ONNX with torch.onnx (dynamo exporter, its default opset unless given)."""
    _check_input(model, input_size, dynamic)
    x = torch.randn(2 if 'batch' in dynamic else 1, *input_size)
    shapes = {}
    if 'batch' in dynamic:
        shapes[0] = torch.export.Dim('batch', min=1, max=4096)
    if 'spatial' in dynamic:
        shapes[2] = torch.export.Dim('height', min=8, max=4096)
        shapes[3] = torch.export.Dim('width', min=8, max=4096)
    program = torch.onnx.export(model, (x,), dynamo=True, opset_version=opset, input_names=['input'],
                                output_names=['output'], dynamic_shapes=({**shapes},) if shapes else None,
                                external_data=False)
    program.save(path)
    return path


def export_torchscript(model: nn.Module, path: str, input_size: Sequence[int]) -> str:
    """``torch.jit.script`` (falls back to ``torch.jit.trace`` for modules script cannot compile)."""
    try:
        scripted = torch.jit.script(model)
    except Exception:  # noqa: BLE001 - tracing is the documented fallback
        scripted = torch.jit.trace(model, torch.randn(1, *input_size))
    scripted.save(path)
    return path


def onnx_max_abs_diff(model: nn.Module, path: str, x: Tensor) -> float:
    """Max |onnxruntime(path)(x) - model(x)|."""
    import onnxruntime as ort
    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        ref = model.eval()(x)
    return float(abs(torch.from_numpy(out) - ref).max())


def export_model(model: nn.Module, out_dir: str, input_size: Sequence[int] = (3, 224, 224),
                 dynamic: Sequence[str] = ('batch',), dense: str = 'auto', opset: Optional[int] = None,
                 name: str = 'model') -> Dict[str, object]:
    """Fold, export ONNX + TorchScript into ``out_dir`` and check onnxruntime against the unfolded model."""
    model = model.eval()
    _check_input(model, input_size, dynamic)
    folded = fold_for_inference(model, input_size, dense)
    os.makedirs(out_dir, exist_ok=True)
    onnx_path = export_onnx(folded, os.path.join(out_dir, f'{name}.onnx'), input_size, dynamic, opset)
    ts_path = export_torchscript(folded, os.path.join(out_dir, f'{name}.pt'), input_size)
    x = torch.randn(2 if 'batch' in dynamic else 1, *input_size)
    import onnx
    opset_used = max(o.version for o in onnx.load(onnx_path).opset_import if o.domain in ('', 'ai.onnx'))
    with torch.no_grad():
        reference = model(x)
        ts_diff = float((torch.jit.load(ts_path)(x) - reference).abs().max())
    return dict(onnx=onnx_path, torchscript=ts_path, opset=opset_used, onnx_max_abs_diff=onnx_max_abs_diff(model, onnx_path, x),
                torchscript_max_abs_diff=ts_diff, output_scale=float(reference.abs().max()),
                dense_bfts=sum(isinstance(m, nn.Conv2d) for m in folded.modules()) - sum(
                    isinstance(m, nn.Conv2d) for m in model.modules()),
                factored_bfts=sum(isinstance(m, FrozenButterfly) for m in folded.modules()))
