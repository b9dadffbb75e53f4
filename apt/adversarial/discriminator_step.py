"""D's update of one stage-2 step:

    L_D = softplus(-D(x)) + softplus(D(G(z))) + lambda * ||D(x) - D(x + sigma n)||^2   (non-saturating)

summed over the update's micro-batches, then one optimiser step (Adam with beta1 0, no clipping).
"""

from __future__ import annotations

import torch

from apt.adversarial import losses
from apt.adversarial.critic import Critic, RealReference
from apt.adversarial.diagnostics import LogitWindow
from apt.adversarial.terms import ApproximatePenalty
from apt.training.distributed import grad_norm
from apt.training.metrics import StepMetrics


class DiscriminatorStep:
    def __init__(self, critic: Critic, optimizer: torch.optim.Optimizer, parameters: list[torch.nn.Parameter],
                 loss: str, r1: ApproximatePenalty, r2: ApproximatePenalty, window: LogitWindow):
        self.critic, self.optimizer, self.parameters, self.loss = critic, optimizer, parameters, loss
        self.r1, self.r2, self.window = r1, r2, window

    def __call__(self, micro_batches, count: int, step: int, metrics: StepMetrics,
                 keep_reference: bool = False) -> list[RealReference | None]:
        """micro_batches: `count` tuples (real latents, text, captions, G's samples detached, G's noise). Returns,
        per micro-batch, its real pass as the G step's reference when keep_reference (else None)."""
        references = []
        # The non-saturating L_D is a sum of a real and a fake half: backpropagating the fake half
        # (with its aR2) before the real pass keeps two D passes' activations alive, not three or four.
        separable = self.loss == "nonsaturating"
        r1_weight = self.r1.weight_at(step)
        # With no penalty this step (lazy aR1), the fake and the real pass hold two passes' activations
        # either way: they run as one call of twice the batch (one set of per-layer overheads and
        # collectives), with the same re-noising draws and the same loss.
        fused = separable and r1_weight == 0 and self.r2.weight == 0
        self.optimizer.zero_grad(set_to_none=True)
        for x, text, _, fake, _ in micro_batches:
            if fused:
                fake_logits, real_logits, reference = self._fused_pass(x, text, fake, keep_reference)
                r1 = r2 = None
                loss_d = losses.discriminator_loss(self.loss, real_logits, fake_logits)
                (loss_d / count).backward()
            else:
                fake_logits, r2, _ = self.critic.penalised_pass(fake, text, self.r2.weight, self.r2.sigma)
                r2_term = self.r2.weight * r2 if r2 is not None else 0.0
                if separable:
                    ((losses.d_loss_fake(fake_logits) + r2_term) / count).backward()
                    fake_logits, r2_term = fake_logits.detach(), 0.0
                real_logits, r1, reference = self.critic.penalised_pass(x, text, r1_weight, self.r1.sigma,
                                                                        keep_reference=keep_reference)
                loss_d = losses.discriminator_loss(self.loss, real_logits, fake_logits)
                total = loss_d + r2_term + (r1_weight * r1 if r1 is not None else 0.0)
                (total / count).backward()
            references.append(reference)
            self._record(metrics, loss_d, real_logits, fake_logits, r1, r2)
        metrics.set("d_grad_norm", grad_norm(self.parameters))
        self.optimizer.step()
        return references

    def _fused_pass(self, x, text, fake, keep_reference: bool):
        """G's samples and the real clips through D in one call, each with its own re-noising."""
        (t_fake, n_fake), (t_real, n_real) = self.critic.renoising(fake), self.critic.renoising(x)
        out = self.critic.logits(torch.cat([fake, x]), torch.cat([text, text]), torch.cat([t_fake, t_real]),
                                 torch.cat([n_fake, n_real]), return_features=keep_reference)
        fake_logits, real_logits = (out[0] if keep_reference else out).chunk(2)
        reference = RealReference.of(t_real, n_real, real_logits, out[1], part=1, parts=2) if keep_reference else None
        return fake_logits, real_logits, reference

    def _record(self, metrics: StepMetrics, loss_d, real_logits, fake_logits, r1, r2) -> None:
        for key, value in (("aR1", r1), ("aR2", r2)):
            if value is not None:
                metrics.add(key, value)
        metrics.add("d_loss", loss_d)
        metrics.add("d_real", real_logits.mean())
        metrics.add("d_fake", fake_logits.mean())
        metrics.add("d_margin", real_logits.mean() - fake_logits.mean())
        metrics.add("d_accuracy", losses.d_accuracy(real_logits, fake_logits))
        self.window.extend(real_logits, fake_logits)
