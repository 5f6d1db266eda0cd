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


def step(opt, loss, lr: float) -> float:
    """One optimiser step at learning rate `lr`; the loss as a number."""
    for g in opt.param_groups:
        g["lr"] = lr
    opt.zero_grad()
    loss.backward()
    opt.step()
    return float(loss.detach())
