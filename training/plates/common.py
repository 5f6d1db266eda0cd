"""What the plate training scripts share: resume after a session ends, save atomically, one
optimiser step, file hashes."""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def resume(last: Path, net, opt) -> tuple[int, list[dict], dict | None]:
    """(first epoch to run, history so far, the checkpoint or None): `last` (model, optimiser,
    epoch, history) loaded into `net` and `opt` when it exists, else a fresh start."""
    import torch

    if not last.exists():
        return 0, [], None
    ckpt = torch.load(last, map_location="cpu", weights_only=False)
    net.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["opt"])
    print(f"resumed after epoch {ckpt['epoch']}", flush=True)
    return ckpt["epoch"] + 1, ckpt["history"], ckpt


def save(state: dict, path: Path) -> None:
    """Written beside `path`, then renamed over it: a killed session never leaves half a file."""
    import torch

    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def add_training_args(ap, *, epochs: int, batch: int, lr: float) -> None:
    """The options every trainer here takes: length, batch, peak lr, seed, threads, time budget."""
    ap.add_argument("--epochs", type=int, default=epochs)
    ap.add_argument("--batch", type=int, default=batch)
    ap.add_argument("--lr", type=float, default=lr)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--hours", type=float, default=0, help="stop after this long (resume later); 0 = no limit")


def end_epoch(state: dict, out: Path, best: bool, started: float, hours: float) -> bool:
    """Checkpoint an epoch (`last.pt`, and `best.pt` when `best`); True when the `hours`
    budget (0 = none) since `started` is spent and training should stop (to resume later)."""
    import time

    save(state, out / "last.pt")
    if best:
        save(state, out / "best.pt")
    if hours and time.time() - started > hours * 3600:
        print("time limit reached: stopping (run again to resume)", flush=True)
        return True
    return False


def step(opt, loss, lr: float) -> float:
    """One optimiser step at learning rate `lr`; the loss as a number."""
    for g in opt.param_groups:
        g["lr"] = lr
    opt.zero_grad()
    loss.backward()
    opt.step()
    return float(loss.detach())
