"""Training curves as PNG (matplotlib, the `train` extra): losses left, validation right."""

from __future__ import annotations

from pathlib import Path


def plot_history(history: list[dict], path: Path, *, losses: tuple[str, ...], loss_title: str,
                 validation: tuple[str, ...], validation_title: str, log_loss: bool = False,
                 legend: str = "lower right") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for key in losses:
        ax1.plot(epochs, [r[key] for r in history], label=key)
    ax1.set_xlabel("epoch")
    ax1.set_title(loss_title)
    if log_loss:
        ax1.set_yscale("log")
    ax1.legend()
    for key in validation:
        ax2.plot(epochs, [r[key] for r in history], label=key)
    ax2.set_xlabel("epoch")
    ax2.set_ylim(0, 1.01)
    ax2.set_title(validation_title)
    ax2.legend(loc=legend)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
