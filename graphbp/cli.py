"""The ``graphbp`` command line: ``graphbp demo`` (and more subcommands, one function each).

Adding a subcommand is one ``add_<name>(subparsers)`` function that creates its parser and
sets ``func``, plus one entry in :data:`SUBCOMMANDS`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence


# -- graphbp demo ---------------------------------------------------------------------------
def add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="train the digits MLP (or CNN, or a character LSTM) and draw its forward and gradient graphs",
        description="Train a 64-128-10 ReLU MLP (or a small CNN with --model cnn) with Adam on the "
        "bundled UCI digits, report held-out accuracy and wall time, and write forward/gradient "
        "graph diagrams. --model lstm trains a character-level LSTM language model (gb.scan, "
        "truncated BPTT) on the bundled quotations and reports held-out bits per character "
        "against a bigram count model, with samples.",
    )
    p.add_argument("--model", choices=("mlp", "cnn", "lstm"), default="mlp", help="the network to train (default mlp)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default 40 for mlp, 6 for cnn, "
                   f"{LSTM_DEFAULTS['epochs']} for lstm)")
    p.add_argument("--batch-size", type=int, default=None,
                   help=f"mini-batch size (default 32; lstm: {LSTM_DEFAULTS['batch_size']} streams)")
    p.add_argument("--lr", type=float, default=None,
                   help=f"peak Adam learning rate, cosine-decayed (default 3e-3; lstm {LSTM_DEFAULTS['lr']:g})")
    p.add_argument("--weight-decay", type=float, default=None, help="decoupled weight decay (default 3e-2 mlp, 1e-1 cnn)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, weights and shuffles")
    p.add_argument("--out", default="graphbp-demo", help="directory for the diagrams (default ./graphbp-demo)")
    lstm = p.add_argument_group("--model lstm")
    lstm.add_argument("--window", type=int, default=None,
                      help=f"characters per truncated-BPTT window (default {LSTM_DEFAULTS['window']})")
    lstm.add_argument("--hidden", type=int, default=None, help=f"LSTM width (default {LSTM_DEFAULTS['hidden']})")
    lstm.add_argument("--chars", type=int, default=None,
                      help="train and score on only the first N characters of the corpus (quick runs)")
    p.add_argument("--distributed", action="store_true",
                   help="train data-parallel over MPI ranks (prints the mpiexec command when not under MPI)")
    bar = p.add_mutually_exclusive_group()
    bar.add_argument("--progress", dest="progress", action="store_true", default=None,
                     help="always draw the progress bar (default: only on a terminal)")
    bar.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(func=run_demo)


LSTM_DEFAULTS = {"epochs": 4, "batch_size": 32, "lr": 1e-2, "window": 64, "hidden": 128}
"""``graphbp demo --model lstm`` defaults (those of :func:`graphbp.train.charlm.run_charlm_demo`)."""


def run_demo(args: argparse.Namespace) -> int:
    batch_size = 32 if args.batch_size is None else args.batch_size
    lr = 3e-3 if args.lr is None else args.lr
    if args.distributed:
        from .distributed.demo import run

        return run(epochs=args.epochs, batch_size=batch_size, seed=args.seed)
    if args.model == "lstm":
        from .train.charlm import run_charlm_demo

        given = {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "window": args.window,
                 "hidden": args.hidden}
        kwargs = {k: LSTM_DEFAULTS[k] if v is None else v for k, v in given.items()}
        result = run_charlm_demo(**kwargs, corpus_chars=args.chars, seed=args.seed, out=args.out,
                                 progress=args.progress)
        return 0 if result.history else 1
    from .train.demo import run_demo as demo

    result = demo(model=args.model, epochs=args.epochs, batch_size=batch_size, lr=lr, weight_decay=args.weight_decay, seed=args.seed,
                  out=args.out, progress=args.progress)
    return 0 if result.history else 1


# -- registry -------------------------------------------------------------------------------
from .render import cli as render_cli  # noqa: E402 - graphbp render / graphbp explain
from .onnx import cli as onnx_cli  # noqa: E402 - graphbp export (the onnx extra is needed only when run)
SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    add_demo,
    render_cli.add_render,
    render_cli.add_explain,
    onnx_cli.add_export,
]


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="graphbp", description="graphbp: a compiler for backpropagation on NumPy")
    parser.add_argument("--version", action="version", version=f"graphbp {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``graphbp`` console script and ``python -m graphbp``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
