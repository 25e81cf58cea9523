"""The benchmark commands run end to end at tiny sizes and write their tables (no timing asserts)."""
from benchmarks import bft_layer, models


def test_bft_layer_quick_writes_ratio_table(tmp_path):
    assert bft_layer.main(['--quick', '--repeats', '1', '--out', str(tmp_path)]) == 0
    text = (tmp_path / 'bft_layer_quick.md').read_text()
    assert '| n | HxW | plan train |' in text
    rows = [line for line in text.splitlines() if line.startswith('| 16 |') or line.startswith('| 64 |')]
    assert len(rows) == 2 and all(line.count('x**') == 3 for line in rows)  # train, inference, memory ratios


def test_models_quick_writes_pair_table_and_plot(tmp_path):
    assert models.main(['--quick', '--backends', 'eager', '--pairs', 'MobileNetV1 14M', '--repeats', '1',
                        '--out', str(tmp_path)]) == 0
    text = (tmp_path / 'models_quick.md').read_text()
    assert '| MobileNetV1 14M | mobilenetv1_025@32 | mobilenetv1_100_bft@32 |' in text
    assert (tmp_path / 'latency_vs_mflops_quick.png').stat().st_size > 1000
