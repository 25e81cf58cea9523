"""The butterfly multiply's execution strategies (bftnets.ops) against a dense reference of the layer-by-layer
definition, the plan cache, and the memory a training step keeps for backward."""
import math

import pytest
import torch

from bftnets import ButterflyTransform
from bftnets.ops import butterfly as F_bft
from bftnets.ops import plan as plan_mod


def layer_matrix(factor: torch.Tensor, radices, t) -> torch.Tensor:
    """Dense N x N matrix of butterfly layer t, differentiable in ``factor`` (P, Q, r, r): entry
    ((p, i, q), (p, j, q)) is factor[p, q, i, j] (paper's layer-by-layer form, digit t mixed)."""
    outer, inner, r = factor.shape[0], factor.shape[1], factor.shape[2]
    n = outer * r * inner
    p, q, i, j = torch.meshgrid(torch.arange(outer), torch.arange(inner), torch.arange(r), torch.arange(r),
                                indexing='ij')
    rows = (p * r + i) * inner + q
    cols = (p * r + j) * inner + q
    dense = torch.zeros(n, n, dtype=factor.dtype)
    return dense.index_put((rows.reshape(-1), cols.reshape(-1)), factor.reshape(-1))


def reference_matrix(m: ButterflyTransform, weight: torch.Tensor) -> torch.Tensor:
    """(out, in) matrix of the module from its weight: fold @ (B_{L-1} ... B_0 [+ I]) @ tile."""
    size = m.size
    b = torch.eye(size, dtype=weight.dtype)
    offset = 0
    for t, r in enumerate(m.radices):
        outer = math.prod(m.radices[:t])
        inner = size // (outer * r)
        factor = weight.reshape(-1)[offset:offset + size * r].view(outer, inner, r, r)
        offset += size * r
        b = layer_matrix(factor, m.radices, t) @ b
    if m.residual:
        b = b + torch.eye(size, dtype=weight.dtype)
    tile = torch.zeros(size, m.in_channels, dtype=weight.dtype)
    tile[torch.arange(size), torch.arange(size) % m.in_channels] = 1
    fold = torch.zeros(m.out_channels, size, dtype=weight.dtype)
    fold[torch.arange(size) % m.out_channels, torch.arange(size)] = 1
    return fold @ b @ tile


def all_plans(layers):
    return [','.join(map(str, g)) for g in plan_mod._compositions(layers)]


CASES = [(16, 16), (64, 64), (24, 40), (40, 24), (96, 16), (13, 7), (1, 5), (256, 256), (48, 48)]


@pytest.mark.parametrize('n_in,n_out', CASES)
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
def test_every_plan_matches_reference_forward_and_gradients(n_in, n_out, dtype):
    torch.manual_seed(n_in * 7 + n_out)
    tol = dict(rtol=1e-9, atol=1e-9) if dtype == torch.float64 else dict(rtol=2e-4, atol=2e-4)
    base = ButterflyTransform(n_in, n_out).to(dtype)
    x = torch.randn(3, n_in, 5, 4, dtype=dtype)
    grad = torch.randn(3, n_out, 5, 4, dtype=dtype)
    w = base.weight.detach().clone().requires_grad_()
    xr = x.clone().requires_grad_()
    ref = torch.einsum('oi,bihw->bohw', reference_matrix(base, w), xr)
    ref_dx, ref_dw = torch.autograd.grad(ref, (xr, w), grad)
    plans = all_plans(base.num_layers)
    assert 'dense' not in plans and len(plans) == 2 ** (base.num_layers - 1)
    for plan in plans + ['factored', 'dense', 'auto']:
        m = ButterflyTransform(n_in, n_out, plan=plan).to(dtype)
        m.weight.data.copy_(base.weight.data)
        for fmt in (torch.contiguous_format, torch.channels_last):
            xi = x.clone().to(memory_format=fmt).requires_grad_()
            y = m(xi)
            torch.testing.assert_close(y, ref.detach(), **tol, msg=f'plan {plan} {fmt} forward')
            dx, dw = torch.autograd.grad(y, (xi, m.weight), grad)
            torch.testing.assert_close(dx, ref_dx, **tol, msg=f'plan {plan} {fmt} input grad')
            torch.testing.assert_close(dw, ref_dw, **tol, msg=f'plan {plan} {fmt} weight grad')
        with torch.no_grad():  # inference path (cached merged factors)
            torch.testing.assert_close(m.eval()(x), ref.detach(), **tol, msg=f'plan {plan} inference')


@pytest.mark.parametrize('batch', [1, 2])
def test_memory_format_follows_input_like_conv(batch):
    m = ButterflyTransform(32, 48)
    x = torch.randn(batch, 32, 3, 5)
    assert m(x).is_contiguous()
    y = m(x.to(memory_format=torch.channels_last))
    assert y.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y, m(x))


def test_bfloat16_close_to_float32():
    torch.manual_seed(0)
    m = ButterflyTransform(256, 256)
    x = torch.randn(2, 256, 4, 4)
    ref = m(x)
    y = m.to(torch.bfloat16)(x.to(torch.bfloat16))
    assert y.dtype == torch.bfloat16
    rel = (y.float() - ref).norm() / ref.norm()
    assert rel < 2e-2, rel
    y.float().sum().backward()
    assert m.weight.grad.dtype == torch.bfloat16 and torch.isfinite(m.weight.grad.float()).all()


def test_recompute_autograd_matches_plain_autograd():
    torch.manual_seed(1)
    radices = F_bft.butterfly_radices(64, 4)
    weight = torch.randn(64 * sum(radices), dtype=torch.float64, requires_grad=True)
    x = torch.randn(2, 6, 64, dtype=torch.float64, requires_grad=True)
    for groups in ([1, 1, 1], [2, 1], [1, 2], [3]):
        outs = []
        for recompute in (True, False):
            factors = F_bft.grouped_factors(weight, radices, groups)
            y = F_bft.butterfly_multiply(x, factors, 64, True, weight, recompute=recompute)
            outs.append((y, *torch.autograd.grad(y.square().sum(), (x, weight))))
        for a, b in zip(*outs):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_inference_cache_follows_weight_updates():
    m = ButterflyTransform(64, 64, plan='2,1').eval()
    x = torch.randn(1, 64, 2, 2)
    with torch.no_grad():
        before = m(x)
        m.weight.mul_(2)  # in-place update bumps the version: cached factors must be rebuilt
        after = m(x)
    expected = torch.einsum('oi,bihw->bohw', reference_matrix(m, m.weight.detach()), x)
    torch.testing.assert_close(after, expected, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(before, after)


def test_plan_cache_is_keyed_by_shape_dtype_device_and_mode(monkeypatch):
    calls = []

    def fake_time(radices, groups, rows, dtype, device, training, repeats=5):
        calls.append((tuple(radices), rows, training))
        return float(len(groups)) if training else -float(len(groups))  # training: fewest passes wins

    monkeypatch.setattr(plan_mod, '_time_groups', fake_time)
    monkeypatch.setattr(plan_mod, '_TUNED', {})
    r256, r1024 = F_bft.butterfly_radices(256, 4), F_bft.butterfly_radices(1024, 4)
    a = plan_mod.choose_groups(r256, 6272, torch.float32, 'cpu', True, 'tune')
    b = plan_mod.choose_groups(r1024, 6272, torch.float32, 'cpu', True, 'tune')
    c = plan_mod.choose_groups(r256, 6272, torch.float32, 'cpu', False, 'tune')
    d = plan_mod.choose_groups(r256, 6000, torch.float32, 'cpu', True, 'tune')  # same power-of-two bucket
    e = plan_mod.choose_groups(r256, 100, torch.float64, 'cpu', True, 'tune')
    assert sum(a) == 4 and sum(b) == 5 and sum(c) == 4 and sum(e) == 4
    assert d == a and len(plan_mod._TUNED) == 4  # d reused a's measurement, every other key measured
    assert len(calls) == 4 * 4  # four candidates timed per key, once
    assert len(a) == min(len(g) for g in plan_mod.candidate_groups(r256, 8192, 'cpu', True))
    assert len(c) == max(len(g) for g in plan_mod.candidate_groups(r256, 8192, 'cpu', False))
    # the model's ranking depends on rows: tiny batch-1 inputs prefer fewer passes
    assert len(plan_mod.parse_plan('auto', r1024, rows=1)) < len(plan_mod.parse_plan('auto', r1024, rows=10 ** 6))


def test_real_tuning_runs_and_returns_a_valid_grouping(monkeypatch):
    monkeypatch.setattr(plan_mod, '_TUNED', {})
    monkeypatch.setenv('BFT_PLAN', 'tune')
    m = ButterflyTransform(64, 64)
    y = m(torch.randn(2, 64, 3, 3))
    assert y.shape == (2, 64, 3, 3)
    (key, groups), = plan_mod._TUNED.items()
    assert key[0] == (4, 4, 4) and key[1] == 32 and key[4] is True and sum(groups) == 3


def test_bad_plan_names_are_rejected():
    with pytest.raises(ValueError, match="unknown BFT plan 'fast'.*summing to 4"):
        ButterflyTransform(256, 256, plan='fast')
    with pytest.raises(ValueError, match='unknown BFT plan'):
        ButterflyTransform(256, 256, plan='2,1')


def count_saved(fn):
    """Run fn under saved-tensor hooks; return the sizes (numel) of every tensor saved for backward."""
    saved = []

    def pack(t):
        saved.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return saved


@pytest.mark.parametrize('plan', ['factored', '2,2', 'auto'])
def test_deep_stack_saves_one_activation_per_layer(plan):
    """A training step of 6 BFTs (4 butterfly layers each) saves the input of each transform and the small
    factors, never the per-pass intermediates (which the plain-autograd path, checked too, does keep)."""
    n, depth = 256, 6
    stack = torch.nn.Sequential(*[ButterflyTransform(n, n, plan=plan) for _ in range(depth)])
    x = torch.randn(2, n, 8, 8, requires_grad=True)
    activation = x.numel()
    big = [s for s in count_saved(lambda: stack(x).sum().backward()) if s >= activation // 2]
    assert len(big) <= depth, f'{len(big)} activation-sized tensors saved for {depth} layers'
    layers = len(plan_mod.parse_plan(plan, [4] * 4, rows=x.numel() // n, training=True))

    def plain():
        h = x
        for m in stack:
            factors = F_bft.grouped_factors(m.weight, m.radices, [int(g) for g in (
                plan_mod.parse_plan(plan, m.radices, rows=128, training=True))])
            h = F_bft.butterfly_multiply(h.flatten(2).transpose(1, 2), factors, n, True, m.weight,
                                         recompute=False).transpose(1, 2).reshape(h.shape)
        h.sum().backward()

    big_plain = [s for s in count_saved(plain) if s >= activation // 2]
    assert len(big_plain) >= depth * layers, 'the reference path should keep every pass input'


def test_compiles_and_matches_eager():
    torch.manual_seed(0)
    m = ButterflyTransform(64, 48)
    x = torch.randn(2, 64, 4, 4, requires_grad=True)
    compiled = torch.compile(m, backend='aot_eager', fullgraph=True)
    y = compiled(x)
    torch.testing.assert_close(y, m(x))
    dx, dw = torch.autograd.grad(y.square().sum(), (x, m.weight))
    ex, ew = torch.autograd.grad(m(x).square().sum(), (x, m.weight))
    torch.testing.assert_close(dx, ex)
    torch.testing.assert_close(dw, ew)
    m.eval()
    with torch.no_grad():  # inference too, in one graph
        torch.testing.assert_close(torch.compile(m, backend='eager', fullgraph=True)(x), m(x))


def test_compiles_with_dynamic_shapes():
    """dynamic=True (what torch.compile switches to after a shape change) keeps one graph with no break."""
    torch.manual_seed(0)
    m = ButterflyTransform(64, 48)
    compiled = torch.compile(m, backend='aot_eager', fullgraph=True, dynamic=True)
    for side in (4, 5, 7):
        x = torch.randn(2, 64, side, side, requires_grad=True)
        y = compiled(x)
        torch.testing.assert_close(y, m(x))
        dx, = torch.autograd.grad(y.square().sum(), x)
        ex, = torch.autograd.grad(m(x).square().sum(), x)
        torch.testing.assert_close(dx, ex)


@pytest.mark.slow
def test_inductor_compile_matches_eager():
    torch.manual_seed(0)
    m = ButterflyTransform(256, 256)
    x = torch.randn(2, 256, 7, 7, requires_grad=True)
    compiled = torch.compile(m)
    y = compiled(x)
    torch.testing.assert_close(y, m(x), rtol=1e-4, atol=1e-4)
    dx, = torch.autograd.grad(y.sum(), x)
    ex, = torch.autograd.grad(m(x).sum(), x)
    torch.testing.assert_close(dx, ex, rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_cuda_matches_cpu():
    torch.manual_seed(0)
    m = ButterflyTransform(96, 256)
    x = torch.randn(2, 96, 5, 5, requires_grad=True)
    y = m(x)
    y.square().sum().backward()
    mc = ButterflyTransform(96, 256).cuda()
    mc.weight.data.copy_(m.weight.data)
    xc = x.detach().cuda().requires_grad_()
    yc = mc(xc)
    yc.square().sum().backward()
    torch.testing.assert_close(yc.cpu(), y, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(xc.grad.cpu(), x.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(mc.weight.grad.cpu(), m.weight.grad, rtol=1e-3, atol=1e-3)
