"""Stage 2 as a trainer stage: alternating discriminator and generator updates (Seaweed-APT, arXiv 2501.08316).

    G(z, c) = z - v(z, 1, c)           initialised from the stage-1 EMA
    D = teacher copy + token heads     initialised from the ORIGINAL teacher, all used weights trained
    D step: L_D = softplus(-D(x)) + softplus(D(G(z))) + lambda * ||D(x) - D(x + sigma n)||^2
    G step: L_G = softplus(-D(G(z)))   then EMA of G (a callback)
Adam with beta1 0 (the paper's "RMSProp") for both, no weight decay, no gradient clipping. The step is
composed of small units: the D step (apt/adversarial/discriminator_step.py), the G step
(generator_step.py), approximate R1/R2 and feature matching (terms.py), the guidance distillation
term (distillation.py), reward feedback (reward_feedback.py), diagnostics (diagnostics.py) and the
collapse guards (guards.py). Optional, off by default: APT2's relativistic loss and approximate R2,
SeedVR2's feature matching, lazy approximate R1, ADD's distillation term, rewards, the G step's real
reference taken from the D step's real pass (adv.real_reference).
"""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import torch

from apt.adversarial.config import APTConfig
from apt.adversarial.critic import Critic
from apt.adversarial.diagnostics import CaptionProbe, LogitWindow
from apt.adversarial.discriminator_step import DiscriminatorStep
from apt.adversarial.distillation import GuidanceDistillation
from apt.adversarial.generator_step import GeneratorStep
from apt.adversarial.guards import CollapseGuard
from apt.adversarial.optimizer import make_optimizer
from apt.adversarial.policy import PolicyObjective
from apt.adversarial.reward_feedback import RewardFeedback
from apt.adversarial.terms import ApproximatePenalty, FeatureMatching
from apt.models.backbone import WanBackbone
from apt.models.generator import OneStepGenerator
from apt.training.distributed import DistInfo, parallelize_backbone
from apt.training.ema import EMAUpdate, trainable_with_ema
from apt.training.flops import per_sample_flops, tokens_of
from apt.training.metrics import StepMetrics
from apt.training.previews import SampleWriter
from discriminator.model import Discriminator
from discriminator.parallel import parallelize_discriminator


class AdversarialPostTraining:
    name = "apt"
    nonfinite_advice = "or raise adv.r1_weight"  # the trainer's message for a non-finite loss

    def __init__(self, cfg: APTConfig, dist: DistInfo, teacher: WanBackbone, generator_init: WanBackbone,
                 previews: SampleWriter, probe: dict | None = None, vae=None,
                 negative_text: torch.Tensor | None = None, reward_prompts=None):
        """probe: a fixed held batch ({"latent", "text"}) for the caption diagnostic; None turns it off.
        vae: the VideoVAE that decodes G's samples for the rewards (needed when adv.rewards is set).
        negative_text: the embedded negative prompt (1, L, D) of the distillation term's CFG (needed when
        adv.distill_weight is set; the teacher is then kept, frozen, as its denoiser). reward_prompts: the
        rewards' own prompts (apt.rewards.prompts.PromptStream), or None (the batch's captions)."""
        self.cfg, self.dist, self.previews = cfg, dist, previews
        self.reward_models = None  # apt.rewards.base.Rewards, when adv.rewards are set
        adv, par = cfg.adv, cfg.parallel
        # GRPO's KL anchor: the starting generator, copied before training (a resume restores G after this)
        self._starting_generator = (copy.deepcopy(generator_init) if adv.policy.objective == "grpo"
                                    and adv.policy.kl_weight else None)
        generator, ema = trainable_with_ema(generator_init, par, copy_init=False, lora=cfg.model.lora)
        self.generator, self.ema = OneStepGenerator(generator), OneStepGenerator(ema)
        self.discriminator = Discriminator.from_teacher(teacher, taps=tuple(adv.taps) or None,
                                                        mlp_ratio=adv.head_mlp_ratio)
        parallelize_discriminator(self.discriminator, par)
        self.g_trainable = [p for p in self.generator.parameters() if p.requires_grad]  # all, or the adapter
        self.opt_g = make_optimizer(adv.optimizer, self.g_trainable, adv.lr_generator, adv.beta2)
        self.d_trainable = [p for p in self.discriminator.parameters() if p.requires_grad]
        heads = {id(p) for p in self.discriminator.head_parameters()}
        self.opt_d = make_optimizer(adv.optimizer, [
            {"params": [p for p in self.d_trainable if id(p) not in heads]},
            {"params": [p for p in self.d_trainable if id(p) in heads], "lr": adv.lr_heads or adv.lr_discriminator},
        ], adv.lr_discriminator, adv.beta2)
        self.critic = Critic(self.discriminator, adv.d_shift)
        self.window = LogitWindow(adv.auc_window)
        self.probe = (CaptionProbe(probe, dist.dp_rank, dist.dp_size, adv.d_shift, dist.device, adv.probe_size)
                      if probe is not None and adv.probe_every else None)
        self.d_step = DiscriminatorStep(self.critic, self.opt_d, self.d_trainable, adv.loss,
                                        ApproximatePenalty(adv.r1_weight, adv.r1_every, adv.r1_sigma),
                                        ApproximatePenalty(adv.r2_weight, 1, adv.r2_sigma), self.window)
        self.matching = FeatureMatching(adv.feature_matching_weight, adv.feature_matching_every)
        self.g_step = GeneratorStep(self.critic, self.opt_g, self.g_trainable, self.d_trainable,
                                    adv.loss, self.matching, self._distillation(teacher, negative_text),
                                    self._rewards(vae), adv.adversarial_weight, reward_prompts, self.generator)
        self.guard = CollapseGuard(adv.collapse_d_loss, adv.collapse_patience, adv.stop_d_auc)

    def _distillation(self, teacher: WanBackbone, negative_text: torch.Tensor | None) -> GuidanceDistillation | None:
        adv = self.cfg.adv
        if adv.distill_weight <= 0:
            return None
        if negative_text is None and adv.distill_guidance_scale != 1.0:
            raise ValueError("adv.distill_weight with guidance needs the embedded negative prompt")
        # D and G hold their own copies: the teacher object itself is free to be the frozen denoiser
        teacher = teacher.eval().requires_grad_(False)
        parallelize_backbone(teacher, replace(self.cfg.parallel, activation_checkpointing=False))
        negative = negative_text.to(self.dist.device) if negative_text is not None else None
        return GuidanceDistillation(teacher, negative, adv.distill_weight, adv.distill_every,
                                    adv.distill_guidance_scale, adv.distill_shift, adv.distill_steps)

    def _rewards(self, vae) -> RewardFeedback | None:
        adv = self.cfg.adv
        if not adv.rewards:
            return None
        if vae is None:
            raise ValueError("adv.rewards needs the VAE to decode the generator's samples")
        from apt.rewards.registry import build_rewards

        vae = vae.to(self.dist.device)
        rewards = build_rewards(adv.rewards).to(self.dist.device)
        self.reward_models = rewards  # their running moments are the stage's state
        if adv.policy.objective:
            return PolicyObjective(rewards, vae, adv.policy, adv.reward_latent_frames, self._reference(),
                                   adv.reward_window)
        return RewardFeedback(rewards, vae, adv.reward_latent_frames, adv.reward_checkpointing, adv.reward_window)

    def _reference(self) -> OneStepGenerator | None:
        """The frozen starting generator of GRPO's KL term (sharded like G), or None."""
        if self._starting_generator is None:
            return None
        reference = self._starting_generator.eval().requires_grad_(False)
        parallelize_backbone(reference, replace(self.cfg.parallel, activation_checkpointing=False))
        self._starting_generator = None
        return OneStepGenerator(reference)

    # Checkpoint the backbones, not the G wrappers: "ema" then has the same keys as stage 1's, so
    # apt.training.run_folder.load_generator and export read either stage's checkpoint.
    def modules(self):
        return {"generator": self.generator.backbone, "ema": self.ema.backbone, "discriminator": self.discriminator}

    def optimizers(self):
        return {"generator": (self.generator.backbone, self.opt_g), "discriminator": (self.discriminator, self.opt_d)}

    def callbacks(self):
        return [EMAUpdate(self.ema, self.generator, self.cfg.adv.ema_decay), self.guard]

    def state_dict(self) -> dict:
        """This rank's running AUC window (what the stop rule reads) and the rewards' running moments
        (adv.rewards[*].normalize), carried across a resume."""
        moments = self.reward_models
        return {"logit_window": self.window.state_dict(),
                "reward_moments": {k: v.cpu() for k, v in moments.moments.state_dict().items()} if moments else {}}

    def load_state_dict(self, state: dict) -> None:
        self.window.load_state_dict(state["logit_window"], self.dist.device)
        moments = self.reward_models
        if moments is not None and state.get("reward_moments"):
            moments.moments.load_state_dict(state["reward_moments"])

    def flops_per_sample(self, latent_shape: tuple[int, ...], text_tokens: int) -> float:
        g = self.generator.backbone
        return per_sample_flops("apt", dict(g.config), tokens_of(latent_shape, g.patch_size), text_tokens,
                                g.num_blocks, self.discriminator.taps, self.cfg.adv.head_mlp_ratio,
                                self.cfg.parallel.activation_checkpointing, self.cfg.model.lora.enabled)["per_sample"]

    def _with_samples(self, batches, grad: bool):
        """The update's micro-batches as they are drawn: (latents, text, captions, G's samples, G's noise)."""
        for batch in batches:
            x, text = batch["latent"], batch["text"]
            noise = torch.randn_like(x)
            with torch.set_grad_enabled(grad):
                fake = self.generator(noise, text)
            yield x, text, batch["caption"], fake, noise

    def train_step(self, batches, step: int) -> StepMetrics:
        adv, count = self.cfg.adv, len(batches)
        metrics = StepMetrics(count)
        if adv.share_generator_pass:
            # G's samples, with their graph, computed once: the D step reads them detached, the G step
            # backpropagates through them after D's update (G does not change in between, so they are
            # exactly what a second forward would give). Costs G's activations through the D step.
            shared = list(self._with_samples(batches, grad=True))
            detached = [(x, text, caption, fake.detach(), noise) for x, text, caption, fake, noise in shared]
            matching = self.matching.weight_at(step) > 0
            keep = adv.real_reference == "discriminator_step" and (adv.loss == "relativistic" or matching)
            references = self.d_step(detached, count, step, metrics, keep_reference=keep)
            self.g_step(shared, count, step, metrics, references)
        else:  # one micro-batch at a time, each half drawing its own data
            self.d_step(self._with_samples(batches, grad=False), count, step, metrics)
            self.g_step(self._with_samples(batches, grad=True), count, step, metrics)
        metrics.set("d_auc", self.window.auc())
        if self.probe is not None and (step + 1) % adv.probe_every == 0:
            metrics.set("caption_auc", self.probe.auc(self.critic))
        return metrics

    @torch.no_grad()
    def sample(self, step: int, out_dir: Path) -> None:
        self.previews.write(self.ema, step, out_dir)
