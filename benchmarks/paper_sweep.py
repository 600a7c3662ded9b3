"""Benchmark: the paper's 16-permutation sweep, results into docs/results/paper_sweep.*

    nice -n 5 .venv/bin/python benchmarks/paper_sweep.py                   # reduced protocol (CPU)
    .venv/bin/python benchmarks/paper_sweep.py --protocol full            # the paper's 50 epochs (accelerator)

Same as ``radseal paper sweep --out docs/results``; the command that ran is
written at the top of the Markdown and in the JSON.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from radseal.io.dataset import resolve_data_dir
from radseal.paper.data import data_label
from radseal.paper.sweep import PROTOCOLS, run_sweep

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--protocol", choices=("reduced", "full", "smoke"), default="reduced")
    p.add_argument("--data", default=None)
    p.add_argument("--out", default=str(ROOT / "docs" / "results"))
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    command = "nice -n 5 .venv/bin/python benchmarks/paper_sweep.py " + " ".join(sys.argv[1:])
    result = run_sweep(resolve_data_dir(args.data), args.out, PROTOCOLS[args.protocol], command=command.strip(), data_label=data_label(args.data))
    print(f"{len(result['runs'])} permutations in {result['seconds_total'] / 60:.1f} min -> {args.out}/paper_sweep.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
