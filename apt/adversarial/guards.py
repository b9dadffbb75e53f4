"""Stopping a stage-2 run that has failed, with a message saying how (the last checkpoint is intact).

Both guards read the step's metrics as synced over ranks, so every rank takes the same decision.
"""

from __future__ import annotations

from apt.training.callbacks import Callback


class TrainingCollapsed(RuntimeError):
    pass


class CollapseGuard(Callback):
    """D winning outright (its loss below collapse_d_loss for `patience` steps: G gets no signal), and,
    with stop_d_auc > 0, the stop rule: D separating G's samples from real clips (running AUC above
    stop_d_auc for `patience` steps: the samples have left the data; reward hacking, if rewards are on)."""

    def __init__(self, collapse_d_loss: float, patience: int, stop_d_auc: float = 0.0):
        self.collapse_d_loss, self.patience, self.stop_d_auc = collapse_d_loss, patience, stop_d_auc
        self.low_d_loss_steps = self.separated_steps = 0

    def after_sync(self, step: int, metrics: dict[str, float]) -> None:
        self.low_d_loss_steps = self.low_d_loss_steps + 1 if metrics["d_loss"] < self.collapse_d_loss else 0
        if self.low_d_loss_steps >= self.patience:
            raise TrainingCollapsed(
                f"discriminator loss below {self.collapse_d_loss} for {self.low_d_loss_steps} steps "
                f"(D wins outright, G gets no signal): check adv.r1_weight / adv.r1_sigma and the batch size")
        separated = self.stop_d_auc and metrics["d_auc"] > self.stop_d_auc
        self.separated_steps = self.separated_steps + 1 if separated else 0
        if self.separated_steps >= self.patience:
            raise TrainingCollapsed(
                f"D tells G's samples from real clips with AUC above {self.stop_d_auc} for {self.separated_steps} "
                f"steps at step {step + 1}: the samples have left the data (reward hacking, if rewards are on). "
                f"Use an earlier checkpoint, or lower the reward weights / raise adv.adversarial_weight")
