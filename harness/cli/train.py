"""``genbench train MODEL --dataset NAME --out CKPT``: train a registered baseline."""

from __future__ import annotations

import argparse
import sys

from harness.cli.eval import parse_model_args


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(name, help="train a registered model (genbench ls models) and save a checkpoint")
    p.add_argument("model", help="registered model name")
    p.add_argument("--dataset", required=True, metavar="NAME_OR_PATH")
    p.add_argument("--out", required=True, metavar="CKPT", help="final checkpoint path (.pt)")
    p.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="model config value (repeatable; VALUE parsed as JSON where it can be)")
    p.add_argument("--steps", type=int, default=None, help="optimisation steps (default: the model's)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="torch device: auto (default: cuda if available, else mps, else cpu), cpu, cuda, cuda:1, mps")
    p.add_argument("--checkpoint-every", type=int, default=0, metavar="N", help="also save every N steps")
    p.add_argument("--resume", default=None, metavar="CKPT", help="continue from a checkpoint written by train")
    p.add_argument("--num-train", type=int, default=None, metavar="N", help="rows drawn for generated (toy) sets")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(command=name)


def run(args: argparse.Namespace) -> int:
    from harness.train import TrainConfig, train

    cfg = TrainConfig(model=args.model, dataset=args.dataset, out=args.out, steps=args.steps,
                      batch_size=args.batch_size, seed=args.seed, device=args.device,
                      checkpoint_every=args.checkpoint_every, resume=args.resume, num_train=args.num_train)
    tty = sys.stderr.isatty()
    summary = train(cfg, model_config=dict(parse_model_args(args.model_arg)), progress=not args.quiet and tty,
                    heartbeat=not args.quiet and not tty)
    losses = ", ".join(f"{k}={v:.4g}" for k, v in summary["last_losses"].items())
    print(f"trained {args.model} for {summary['steps']} steps in {summary['wall_time_s']:.1f} s ({losses})")
    print(f"checkpoint {summary['checkpoint']}  sha256 {summary['sha256']}")
    return 0
