"""Benchmark: the paper's three detailed cases at 10, 25 and 50 epochs (resumable).

    nice -n 19 python benchmarks/paper_epochs.py --out runs/paper-epochs --threads 1
    python benchmarks/paper_epochs.py --out runs/paper-epochs --summarize-only --results docs/results

The first form runs (or, started again with the same --out, continues) the
run of ``radseal.paper.paper_epochs``; state and progress.jsonl stay in --out
(under the git-ignored runs/). The second form writes the summary of whatever
units have completed, complete or not, to docs/results/paper_epochs.{json,md}.
Same as ``radseal paper sweep --protocol paper-epochs --out runs/paper-epochs``.
"""

from __future__ import annotations

import argparse
import sys

import torch

from radseal.io.dataset import resolve_data_dir
from radseal.paper.data import data_label
from radseal.paper.paper_epochs import EPOCH_PROTOCOLS, run_paper_epochs, write_summary


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--protocol", choices=tuple(EPOCH_PROTOCOLS), default="paper-epochs")
    p.add_argument("--data", default=None, help="data folder (default: ../shared/data/cxr)")
    p.add_argument("--out", default="runs/paper-epochs", help="run folder: state, progress.jsonl, summary")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--summarize-only", action="store_true", help="only write the summary of the run in --out to --results")
    p.add_argument("--results", default="docs/results", help="where --summarize-only writes paper_epochs.{json,md}")
    args = p.parse_args()
    if args.summarize_only:
        s = write_summary(args.out, args.results)
        print(f"{s['epochs_done']} of {s['epochs_planned']} epochs; complete: {s['complete']} -> {args.results}/paper_epochs.md")
        return 0
    torch.set_num_threads(args.threads)
    command = f"nice -n 19 python benchmarks/paper_epochs.py --protocol {args.protocol} --out {args.out} --threads {args.threads}"
    if args.data:
        command += f" --data {args.data}"
    data = resolve_data_dir(args.data)
    s = run_paper_epochs(data, args.out, EPOCH_PROTOCOLS[args.protocol], command=command, data_label=data_label(args.data))
    print(f"{s['epochs_done']} of {s['epochs_planned']} epochs; complete: {s['complete']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
