"""Stopping a stage-2 run that has failed, with a message saying how (the last checkpoint is intact).

Both guards read the step's metrics as synced over ranks, so every rank takes the same decision.
"""

from __future__ import annotations

from apt.training.callbacks import Callback
from apt.training.run_log import logger


class TrainingCollapsed(RuntimeError):
    pass


# D's running AUC above this for `patience` steps is what a failing run looks like (docs/troubleshooting.md):
# with the stop rule off, the guard says so once instead of stopping.
WARN_D_AUC = 0.95


class CollapseGuard(Callback):
    """D winning outright (its loss below collapse_d_loss for `patience` steps: G gets no signal), and,
    with stop_d_auc > 0, the stop rule: D separating G's samples from real clips (running AUC above
    stop_d_auc for `patience` steps: the samples have left the data; reward hacking, if rewards are on).
    With the stop rule off, the same sign above WARN_D_AUC is logged once as a warning."""

    def __init__(self, collapse_d_loss: float, patience: int, stop_d_auc: float = 0.0):
        self.collapse_d_loss, self.patience, self.stop_d_auc = collapse_d_loss, patience, stop_d_auc
        self.low_d_loss_steps = self.separated_steps = 0
        self.warned = False

    def after_sync(self, step: int, metrics: dict[str, float]) -> None:
        self.low_d_loss_steps = self.low_d_loss_steps + 1 if metrics["d_loss"] < self.collapse_d_loss else 0
        if self.low_d_loss_steps >= self.patience:
            raise TrainingCollapsed(
                f"discriminator loss below {self.collapse_d_loss} for {self.low_d_loss_steps} steps "
                f"(D wins outright, G gets no signal): check adv.r1_weight / adv.r1_sigma and the batch size")
        separated = metrics["d_auc"] > (self.stop_d_auc or WARN_D_AUC)
        self.separated_steps = self.separated_steps + 1 if separated else 0
        if self.separated_steps >= self.patience and not self.stop_d_auc:
            if not self.warned:
                self.warned = True
                logger.warning(f"warning: D tells G's samples from real clips with AUC above {WARN_D_AUC} for "
                               f"{self.separated_steps} steps at step {step + 1} (margin {metrics.get('d_margin', 0):.3g}): "
                               "the signature of a failing run (docs/troubleshooting.md); adv.stop_d_auc stops such a run")
            return
        if self.separated_steps >= self.patience:
            raise TrainingCollapsed(
                f"D tells G's samples from real clips with AUC above {self.stop_d_auc} for {self.separated_steps} "
                f"steps at step {step + 1}: the samples have left the data (reward hacking, if rewards are on). "
                f"Use an earlier checkpoint, or lower the reward weights / raise adv.adversarial_weight")

    def state_dict(self) -> dict:
        return {"low_d_loss_steps": self.low_d_loss_steps, "separated_steps": self.separated_steps,
                "warned": int(self.warned)}

    def load_state_dict(self, state: dict) -> None:
        self.low_d_loss_steps, self.separated_steps = state["low_d_loss_steps"], state["separated_steps"]
        self.warned = bool(state.get("warned", 0))
