"""``python -m flops [--out PATH]``: count every paper configuration and write the table (flops/README.md).

Prints one line per row; exits with status 1 if a row is outside its tolerance."""
import argparse
import sys
from pathlib import Path

from flops import README, write_readme


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog='python -m flops', description=__doc__)
    parser.add_argument('--out', type=Path, default=README, help=f'markdown file to write (default: {README})')
    args = parser.parse_args(argv)
    measured = write_readme(args.out)
    failed = 0
    for m in measured:
        r = m.row
        dev = '' if m.deviation is None else f'paper {r.paper_mflops:g}  {m.deviation:+5.1f}%'
        status = {None: '', True: 'ok', False: 'OUTSIDE TOLERANCE'}[m.within_tolerance]
        failed += m.within_tolerance is False
        print(f'{r.model:28s} {r.resolution:4d}  {m.mflops:8.2f} MFLOPs  {dev:22s} {m.params_m:6.2f}M params  {status}')
    print(f'wrote {args.out}' + (f'; {failed} row(s) outside tolerance' if failed else '; every row within tolerance'))
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
