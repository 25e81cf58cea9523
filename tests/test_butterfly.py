"""ButterflyTransform against an independent, slow construction of the paper's B(n, k) (Eq. 3-5)."""
import math

import numpy as np
import pytest
import torch

from bftnets import ButterflyTransform
from bftnets.ops import butterfly_radices


def layer_weights(module: ButterflyTransform):
    """Per-layer (P, Q, r_out, r_in) arrays, sliced from the flat weight by the documented storage layout."""
    w = module.weight.detach().double().numpy().reshape(-1)
    radices, n = module.radices, module.size
    out, offset = [], 0
    for t, r in enumerate(radices):
        outer = math.prod(radices[:t])
        inner = n // (outer * r)
        out.append(w[offset:offset + n * r].reshape(outer, inner, r, r))
        offset += n * r
    assert offset == w.size
    return out


def recursive_butterfly(weights, radices, level=0, prefix=0):
    """Eq. 3: split into r chunks, y_i = sum_j D_ij x_j with diagonal D_ij, then a butterfly of order n/r
    on every y_i. Dense float64, built block by block from the definition."""
    if level == len(radices):
        return np.ones((1, 1))
    r = radices[level]
    m = math.prod(radices[level:])
    chunk = m // r
    mix = np.zeros((m, m))
    for i in range(r):
        for j in range(r):
            mix[i * chunk:(i + 1) * chunk, j * chunk:(j + 1) * chunk] = np.diag(weights[level][prefix, :, i, j])
    sub = np.zeros((m, m))
    for i in range(r):
        sub[i * chunk:(i + 1) * chunk, i * chunk:(i + 1) * chunk] = recursive_butterfly(
            weights, radices, level + 1, prefix * r + i)
    return sub @ mix


def reference_dense(module: ButterflyTransform) -> np.ndarray:
    n_in, n_out, size = module.in_channels, module.out_channels, module.size
    b = recursive_butterfly(layer_weights(module), module.radices)
    if module.residual:
        b = b + np.eye(size)
    tile = np.zeros((size, n_in))
    tile[np.arange(size), np.arange(size) % n_in] = 1  # channel c reads input c mod n_in
    fold = np.zeros((n_out, size))
    fold[np.arange(size) % n_out, np.arange(size)] = 1  # output c sums every c + i * n_out
    return fold @ b @ tile


@pytest.mark.parametrize('n,k', [(4, 4), (16, 4), (64, 4), (256, 4), (8, 2), (32, 2), (64, 8), (27, 3)])
@pytest.mark.parametrize('residual', [True, False])
def test_square_power_matches_paper_definition(n, k, residual):
    torch.manual_seed(n + k)
    m = ButterflyTransform(n, n, base=k, residual=residual).double()
    layers = round(math.log(n, k))
    assert m.radices == [k] * layers
    # exactly k * n * L weights and nothing else
    assert sum(p.numel() for p in m.parameters()) == k * n * layers
    assert list(m.buffers()) == []
    ref = reference_dense(m)
    np.testing.assert_allclose(m.to_dense().numpy(), ref, rtol=1e-10, atol=1e-12)
    x = torch.randn(3, n, 5, 4, dtype=torch.float64)
    y = m(x)
    expected = torch.einsum('oi,bihw->bohw', torch.from_numpy(ref), x)
    torch.testing.assert_close(y, expected, rtol=1e-10, atol=1e-10)


def test_reference_is_not_a_lowest_digit_butterfly():
    """Layer 0 must mix the most significant digit (the authors' code wired every layer by the lowest one)."""
    m = ButterflyTransform(16, 16, residual=False).double()
    with torch.no_grad():
        m.weight.zero_()
        flat = m.weight.view(-1)
        flat[:64].copy_(torch.randn(64, dtype=torch.float64))  # layer 0 only ...
        flat[64:].view(4, 1, 4, 4)[:] = torch.eye(4, dtype=torch.float64)  # ... layer 1 identity
    dense = m.to_dense()
    # with layer 1 the identity, output c depends only on inputs with the same low digit (c mod 4)
    rows, cols = torch.nonzero(dense, as_tuple=True)
    assert torch.equal(rows % 4, cols % 4)
    assert dense.count_nonzero() == 16 * 4


@pytest.mark.parametrize('n_in,n_out', [(16, 96), (96, 24), (24, 24), (40, 40), (72, 120), (576, 96),
                                        (7, 13), (13, 7), (1, 5), (5, 1), (1000, 100)])
def test_any_widths_match_reference_and_connect_everything(n_in, n_out):
    torch.manual_seed(n_in * 31 + n_out)
    m = ButterflyTransform(n_in, n_out, residual=False).double()
    dense = m.to_dense()
    assert dense.shape == (n_out, n_in)
    np.testing.assert_allclose(dense.numpy(), reference_dense(m), rtol=1e-10, atol=1e-12)
    # full connectivity: every output depends on every input
    assert (dense.abs() > 0).all()
    x = torch.randn(2, n_in, 3, 3, dtype=torch.float64)
    assert m(x).shape == (2, n_out, 3, 3)
    # cost stays O(N log N): N = max(in, out) rounded up to a small-prime-factor size
    n = max(n_in, n_out)
    assert n <= m.size <= 1.25 * n + 4
    assert m.weight.numel() == m.size * sum(m.radices)
    assert max(m.radices) <= 5


def test_residual_variant_matches_reference_for_unequal_widths():
    m = ButterflyTransform(24, 96, residual=True).double()
    np.testing.assert_allclose(m.to_dense().numpy(), reference_dense(m), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize('n_in,n_out', [(16, 16), (12, 20), (20, 12)])
def test_gradcheck_float64(n_in, n_out):
    torch.manual_seed(0)
    m = ButterflyTransform(n_in, n_out).double()
    x = torch.randn(2, n_in, 2, 3, dtype=torch.float64, requires_grad=True)
    w = m.weight.detach().clone().requires_grad_()

    def fn(x, w):
        return torch.func.functional_call(m, {'weight': w}, (x,))

    assert torch.autograd.gradcheck(fn, (x, w))


def test_init_statistics_match_xavier_dense():
    """Eq. 9: E|B_uv| equals the Xavier-initialised dense entry's x / 2 (n = 256, k = 4)."""
    torch.manual_seed(0)
    n = 256
    xavier = math.sqrt(6 / (2 * n))
    means = [ButterflyTransform(n, n, residual=False).double().to_dense().abs().mean().item() for _ in range(4)]
    assert abs(np.mean(means) / (xavier / 2) - 1) < 0.10


@pytest.mark.parametrize('kwargs,message', [
    (dict(in_channels=0, out_channels=8), 'in_channels must be a positive int'),
    (dict(in_channels=8, out_channels=-3), 'out_channels must be a positive int'),
    (dict(in_channels=8.0, out_channels=8), 'in_channels must be a positive int'),
    (dict(in_channels=8, out_channels=8, base=1), 'base must be an int >= 2'),
])
def test_rejects_impossible_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ButterflyTransform(**kwargs)


def test_rejects_wrong_input_shape():
    m = ButterflyTransform(8, 8)
    with pytest.raises(ValueError, match='expects NCHW input with 8 channels'):
        m(torch.randn(2, 4, 3, 3))


def test_radices():
    assert butterfly_radices(1024, 4) == [4] * 5
    assert butterfly_radices(512, 4) == [4, 4, 4, 4, 2]
    assert math.prod(butterfly_radices(97, 4)) == 100


def test_forward_backward_never_builds_dense_matrix():
    """Training cost is O(n log n): no (n, n)-sized tensor is created in forward or backward at n = 1024."""
    n = 1024
    m = ButterflyTransform(n, n)
    x = torch.randn(1, n, 2, 2, requires_grad=True)
    biggest = []

    def track(t):
        biggest.append(t.numel())
        return t

    from torch.utils._python_dispatch import TorchDispatchMode

    class RecordSizes(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in (out if isinstance(out, (tuple, list)) else [out]):
                if isinstance(t, torch.Tensor):
                    track(t)
            return out

    with RecordSizes():
        m(x).sum().backward()
    assert max(biggest) < n * n / 8, f'largest tensor has {max(biggest)} elements'


def test_scriptable_and_compilable():
    m = ButterflyTransform(24, 40)
    x = torch.randn(2, 24, 3, 3)
    scripted = torch.jit.script(m)
    torch.testing.assert_close(scripted(x), m(x))
    compiled = torch.compile(m, backend='eager')
    torch.testing.assert_close(compiled(x), m(x))


def test_weights_are_found_for_their_own_optimizer_group():
    from timm.optim import param_groups_weight_decay
    from bftnets.layers.butterfly import butterfly_parameters
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), ButterflyTransform(16, 32), torch.nn.BatchNorm2d(32))
    found = butterfly_parameters(model)
    assert list(found) == ['1.weight'] and found['1.weight'] is model[1].weight
    # timm's default grouping must keep decay on BFT weights (1-D tensors would silently lose it)
    decayed = param_groups_weight_decay(model, weight_decay=1e-5)[1]['params']
    assert any(p is model[1].weight for p in decayed)
