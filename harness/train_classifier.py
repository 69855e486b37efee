"""Train a :class:`~metrics.features.classifier.SmallCNN` feature extractor, deterministically on CPU.

Reproduce the committed weights with::

    python -m harness.train_classifier --dataset mnist5k-train --eval-dataset mnist5k-test \\
        --out metrics/features/weights/mnist-cnn.pt --seed 0
    python -m harness.train_classifier --dataset fashion-mnist-train \\
        --eval-dataset fashion-mnist-test --out metrics/features/weights/fashion-mnist-cnn.pt --seed 0

Writes the state dict (plain tensors, loadable with ``torch.load(..., weights_only=True)``) and a
JSON sidecar ``<name>.json`` with its sha256 and the training provenance. Both writes are atomic.
Runs are bit-identical for the same seed, torch build and thread count; other builds or thread
counts may differ in the last bits.
"""

from __future__ import annotations

import argparse
import io
import logging
import shlex
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from harness.core.atomic import atomic_open, write_json
from harness.datasets import load_dataset
from metrics.features.classifier import (
    ARCHITECTURE,
    BT601_WEIGHTS,
    NORM_MEAN,
    NORM_STD,
    RESIZE,
    SmallCNN,
    preprocess,
    sha256_bytes,
)

logger = logging.getLogger(__name__)

#: Epochs used when ``--epochs`` is not given (the committed weights use these).
DEFAULT_EPOCHS = {"mnist5k-train": 10, "fashion-mnist-train": 2}


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings (Adam, cross-entropy, fixed learning rate)."""

    seed: int = 0
    epochs: int = 5
    batch_size: int = 64
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    num_threads: int = 1


@contextmanager
def deterministic(seed: int, num_threads: int) -> Iterator[None]:
    """Seed torch, force deterministic kernels and fix the CPU thread count inside the block.

    The global RNG state, the deterministic-algorithms flag and the thread count are restored on
    exit. A fixed thread count (default 1) removes one source of run-to-run differences in CPU
    reductions, and one thread is also the fastest choice on a shared 2-core machine.
    """
    was_enabled = torch.are_deterministic_algorithms_enabled()
    was_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    was_threads = torch.get_num_threads()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(True)
        torch.set_num_threads(num_threads)
        try:
            yield
        finally:
            torch.set_num_threads(was_threads)
            torch.use_deterministic_algorithms(was_enabled, warn_only=was_warn_only)


def train(
    x: torch.Tensor, labels: torch.Tensor, config: TrainConfig, *, progress: bool = True
) -> dict[str, torch.Tensor]:
    """Train a fresh :class:`SmallCNN` on CPU and return its state dict (cloned CPU tensors).

    ``x``: uint8 images ``[N, C, H, W]`` (preprocessed exactly as at extraction time);
    ``labels``: int64 ``[N]`` in 0..9. The data order comes from a ``torch.Generator`` seeded
    with ``config.seed``; weight init and dropout use the global RNG, seeded with the same value
    inside :func:`deterministic`, which restores it afterwards.
    """
    if x.shape[0] != labels.shape[0]:
        raise ValueError(f"{x.shape[0]} images but {labels.shape[0]} labels")
    inputs = preprocess(x.cpu())
    targets = labels.cpu().to(torch.int64)
    with deterministic(config.seed, config.num_threads):
        order_rng = torch.Generator().manual_seed(config.seed)
        model = SmallCNN()
        optimizer = torch.optim.Adam(
            model.parameters(), lr=config.lr, betas=config.betas, weight_decay=config.weight_decay
        )
        model.train()
        steps_per_epoch = -(-len(inputs) // config.batch_size)
        bar = tqdm(total=config.epochs * steps_per_epoch, disable=not progress, desc="train", unit="step")
        for epoch in range(config.epochs):
            for idx in torch.randperm(len(inputs), generator=order_rng).split(config.batch_size):
                _, logits = model(inputs[idx])
                loss = F.cross_entropy(logits, targets[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                bar.update()
                bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.4f}")
        bar.close()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def evaluate(state: dict[str, torch.Tensor], x: torch.Tensor, labels: torch.Tensor, *, batch_size: int = 500) -> float:
    """Top-1 accuracy (fraction in [0, 1]) of ``state`` on uint8 images ``x`` ``[N, C, H, W]``."""
    model = SmallCNN()
    model.load_state_dict(state)
    model.eval()
    correct = 0
    with torch.inference_mode():
        for xb, yb in zip(x.split(batch_size), labels.split(batch_size)):
            _, logits = model(preprocess(xb))
            correct += int((logits.argmax(dim=1) == yb).sum())
    return correct / max(len(labels), 1)


def save_weights(state: dict[str, torch.Tensor], out: Path, provenance: dict[str, Any]) -> dict[str, Any]:
    """Atomically write ``out`` (state dict), then its sidecar ``out.with_suffix('.json')``; return the sidecar.

    The state dict is serialised to memory first, so the archive's internal name does not depend
    on the temp file's name and identical weights give identical bytes (and sha256).
    """
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    sidecar = {"name": out.stem, "sha256": sha256_bytes(data), "size_bytes": len(data), **provenance}
    with atomic_open(out) as handle:
        handle.write(data)
    write_json(out.with_suffix(".json"), sidecar)
    return sidecar


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Parse the command line (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog="python -m harness.train_classifier",
        description="Train a SmallCNN feature extractor deterministically on CPU; writes <out>.pt and <out>.json.",
    )
    parser.add_argument("--dataset", required=True, help="training dataset name, e.g. mnist5k-train")
    parser.add_argument("--eval-dataset", required=True, help="held-out dataset for the reported accuracy")
    parser.add_argument("--out", required=True, type=Path, help="output .pt path; the sidecar is <out>.json")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=None, help=f"default: {DEFAULT_EPOCHS}, else {TrainConfig.epochs}")
    parser.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    parser.add_argument("--lr", type=float, default=TrainConfig.lr)
    parser.add_argument("--no-progress", action="store_true", help="hide the tqdm progress bar")
    args = parser.parse_args(argv)
    if args.out.suffix != ".pt":
        parser.error(f"--out must end in .pt, got {args.out}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    epochs = args.epochs if args.epochs is not None else DEFAULT_EPOCHS.get(args.dataset, TrainConfig.epochs)
    config = TrainConfig(seed=args.seed, epochs=epochs, batch_size=args.batch_size, lr=args.lr)
    train_set, eval_set = load_dataset(args.dataset), load_dataset(args.eval_dataset)
    for dataset in (train_set, eval_set):
        if dataset.kind != "image" or dataset.labels is None:
            raise ValueError(f"{dataset.name!r} must be a labelled image dataset, got {dataset!r}")
    train_x, train_y = torch.from_numpy(train_set.x), torch.from_numpy(train_set.labels)
    logger.info("training %s on %s (%d images): %s", ARCHITECTURE, args.dataset, len(train_set), config)
    start = time.perf_counter()
    state = train(train_x, train_y, config, progress=not args.no_progress)
    logger.info("trained in %.1f s", time.perf_counter() - start)
    accuracy = evaluate(state, torch.from_numpy(eval_set.x), torch.from_numpy(eval_set.labels))
    logger.info("accuracy on %s (%d images): %.4f", args.eval_dataset, len(eval_set), accuracy)
    provenance = {
        "architecture": ARCHITECTURE,
        "feature_layer": "fc1 pre-ReLU",
        "dataset": args.dataset,
        "dataset_content_hash": train_set.content_hash,
        "dataset_labels_sha256": sha256_bytes(train_set.labels.tobytes()),
        "num_train": len(train_set),
        "eval_dataset": args.eval_dataset,
        "eval_dataset_content_hash": eval_set.content_hash,
        "num_eval": len(eval_set),
        "eval_accuracy": round(accuracy, 6),
        "seed": config.seed,
        "epochs": config.epochs,
        "batch_size": config.batch_size,
        "optimizer": {"name": "Adam", "loss": "cross_entropy", "lr": config.lr, "betas": list(config.betas),
                      "weight_decay": config.weight_decay},
        "preprocessing": {"scale": "x/255", "mean": NORM_MEAN, "std": NORM_STD,
                          "rgb_to_gray": list(BT601_WEIGHTS), "resize": RESIZE},
        "deterministic": {"use_deterministic_algorithms": True, "num_threads": config.num_threads},
        "torch_version": torch.__version__,
        "command": shlex.join(["python", "-m", "harness.train_classifier", *argv]),
    }
    sidecar = save_weights(state, args.out, provenance)
    logger.info("wrote %s (%d bytes, sha256 %s) and its .json sidecar", args.out, sidecar["size_bytes"], sidecar["sha256"])
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    raise SystemExit(main())
