"""Stage-2 configuration: configs/<model>/apt*.yaml merged over these defaults."""

from __future__ import annotations

from dataclasses import dataclass, field

from apt.core.config import ConfigError
from apt.rewards.config import PolicyConfig, RewardConfig
from apt.rewards.registry import check_reward
from apt.training.config import RunConfig


@dataclass
class AdversarialConfig:
    generator_init: str = ""  # stage-1 run dir or checkpoint (its EMA), an apt-export folder, or "teacher" (tests)
    # a stage-2 run (or checkpoint) whose discriminator D continues from; "" = a fresh copy of the teacher
    discriminator_init: str = ""
    lr_generator: float = 5e-6  # paper: 5e-6 image stage, 3e-6 video stage
    lr_discriminator: float = 5e-6  # D's backbone (and, with lr_heads 0, its heads)
    # the new token heads and logit layer only; 0 = lr_discriminator (the paper uses one learning rate)
    lr_heads: float = 0.0
    # "adam": Adam with beta1 0 and bias correction, the paper's "RMSProp (Adam with beta1 = 0)";
    # "rmsprop": torch's RMSprop (alpha = beta2), whose first updates are several times the lr
    optimizer: str = "adam"
    beta2: float = 0.9  # second-moment decay (paper: 0.9)
    ema_decay: float = 0.995  # EMA of G, the model sampled and exported (paper: 0.995)
    d_shift: float = 12.0  # D re-noising t ~ shift(U(0,1), s): 1 for images, 12 for video
    r1_weight: float = 100.0  # approximate R1 lambda; 0 disables it (the ablation)
    r1_sigma: float = 0.1  # 0.01 images, 0.1 video
    # lazy regularisation: approximate R1 on every k-th D step only, its weight multiplied by k
    # (StyleGAN2's trick; 1 = every step, the paper)
    r1_every: int = 1
    # compute G's samples once per update, with their graph, for both halves (one batch of data per
    # update instead of two): saves a G forward, keeps G's activations alive through the D step
    share_generator_pass: bool = False
    r2_weight: float = 0.0  # approximate R2 on generated samples (APT2: 1000 with sigma 0.1); 0 = off
    r2_sigma: float = 0.1  # approximate R2's perturbation (APT2: 0.1)
    feature_matching_weight: float = 0.0  # SeedVR2-style L1 on D's tapped features, added to L_G; 0 = off
    # lazy feature matching: on one G step in k, weighted by k (its real reference pass costs a D forward)
    feature_matching_every: int = 1
    # where the G step's real reference (feature matching's real features; the relativistic loss's real
    # logits) comes from: "fresh" = its own no-grad D pass on the real clips at G's re-noising, after D's
    # update; "discriminator_step" = the D step's real pass of the same update (D one update older), G's
    # samples then re-noised at that pass's t and noise: no extra D pass (needs share_generator_pass)
    real_reference: str = "fresh"
    loss: str = "nonsaturating"  # or "relativistic" (APT2's pairing loss)
    # ADD's distillation term (Sauer et al. 2023, arXiv 2311.17042), beyond the paper: G's sample,
    # re-noised at t ~ shift(U(0,1), distill_shift), is denoised by the frozen teacher with CFG, and
    # L_G += distill_weight * ||G(z) - stopgrad(teacher x0 prediction)||^2: the teacher's guidance
    # (which pure APT loses, docs/experiments/2026-11-23-stage2-apt.md) pulls on G while D keeps it on the data; on one G
    # step in distill_every, weighted by distill_every (lazy, like r1_every). 0 = off
    distill_weight: float = 0.0
    distill_guidance_scale: float = 5.0  # the teacher's CFG in the distillation target
    distill_negative_prompt: str = ""  # its negative prompt
    distill_shift: float = 1.0  # G's samples are re-noised at t ~ shift(U(0,1), distill_shift)
    distill_every: int = 1  # lazy: on one G step in k, weighted by k
    # the target: 1 = the teacher's x0 prediction at t (ADD); k > 1 = k guided Euler steps of the teacher
    # from t to 0 (a teacher sample that starts from G's re-noised sample: sharp where one prediction is blurred)
    distill_steps: int = 1
    # diagnostics: every probe_every steps, D's AUC for real clips with their own vs another clip's
    # caption on a fixed held batch of probe_size clips (0 = off); the running real-vs-fake AUC is over
    # the last auc_window real and fake logits of each rank
    probe_every: int = 20
    probe_size: int = 64  # held clips of the caption diagnostic, over all ranks
    auc_window: int = 256  # real and fake logits per rank in the running AUC (d_auc)
    # reward feedback on the one-step generator: L_G = L_adv - sum_i w_i R_i(decode(G(z)), c); [] = off
    rewards: list[RewardConfig] = field(default_factory=list)
    reward_latent_frames: int = 0  # decode only the first k latent frames for the rewards (0 = all)
    # decode k latent frames at a random start (per micro-batch) instead, the decoder's causal cache warmed
    # on the frames before them without gradients: every frame of the clip is rewarded over the run; 0 = off
    reward_window: int = 0
    policy: PolicyConfig = field(default_factory=PolicyConfig)  # rewards without a gradient (GRPO, PRDP)
    # a prompts file (one per line) whose prompts the rewards score G's samples of, instead of the real clips'
    # captions: alignment on prompts that have no video (apt/rewards/prompts.py); "" = the batch's captions
    reward_prompts: str = ""
    reward_checkpointing: bool = True  # recompute each latent frame's VAE decode in backward (bounded memory)
    adversarial_weight: float = 1.0  # the weight of L_adv in L_G; 0 = reward only (the reward-hacking ablation)
    taps: list[int] = field(default_factory=list)  # 1-based; empty = 4/9, 13/18, 1 of depth
    head_mlp_ratio: float = 4.0  # width of the token heads' MLP, times the model width
    collapse_d_loss: float = 1e-3  # stop when the D loss stays below this ...
    collapse_patience: int = 20  # ... for this many consecutive steps
    # stop when D's running real-vs-fake AUC stays above this for collapse_patience steps: G's samples
    # have left the data (what reward hacking looks like, docs/experiments/2026-11-24-reward-feedback.md); 0 = off
    stop_d_auc: float = 0.0

    def validate(self):
        if not self.generator_init:
            raise ConfigError("adv.generator_init: give the stage-1 run (or checkpoint) the generator starts from")

        if self.loss not in ("nonsaturating", "relativistic"):
            raise ConfigError(f"adv.loss must be 'nonsaturating' or 'relativistic', got {self.loss!r}")
        if self.lr_heads < 0:
            raise ConfigError(f"adv.lr_heads must be >= 0 (0 = adv.lr_discriminator), got {self.lr_heads}")
        for key in ("lr_generator", "lr_discriminator", "d_shift"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"adv.{key} must be positive, got {getattr(self, key)}")
        for name in ("r1", "r2"):
            if getattr(self, f"{name}_weight") < 0 or getattr(self, f"{name}_sigma") <= 0:
                raise ConfigError(f"adv.{name}_weight must be >= 0 and adv.{name}_sigma > 0")
        if self.feature_matching_weight < 0:
            raise ConfigError(f"adv.feature_matching_weight must be >= 0, got {self.feature_matching_weight}")
        if not 0.0 <= self.ema_decay < 1.0 or not 0.0 < self.beta2 < 1.0:
            raise ConfigError("adv.ema_decay must be in [0, 1) and adv.beta2 in (0, 1)")
        if self.real_reference not in ("fresh", "discriminator_step"):
            raise ConfigError(f"adv.real_reference must be 'fresh' or 'discriminator_step', "
                              f"got {self.real_reference!r}")
        needs_reference = self.feature_matching_weight > 0 or self.loss == "relativistic"
        if self.real_reference == "discriminator_step" and needs_reference and not self.share_generator_pass:
            raise ConfigError("adv.real_reference=discriminator_step reuses the D step's pass on the update's real "
                              "clips: it needs adv.share_generator_pass=true (both halves on the same batch), "
                              "or adv.real_reference=fresh")
        if self.optimizer not in ("adam", "rmsprop"):
            raise ConfigError(f"adv.optimizer must be 'adam' or 'rmsprop', got {self.optimizer!r}")
        if self.distill_weight < 0 or self.distill_guidance_scale < 0 or self.distill_shift <= 0:
            raise ConfigError("adv.distill_weight and adv.distill_guidance_scale must be >= 0, adv.distill_shift > 0")
        for key in ("r1_every", "feature_matching_every", "distill_every", "distill_steps", "auc_window", "probe_size",
                    "collapse_patience"):
            if getattr(self, key) < 1:
                raise ConfigError(f"adv.{key} must be >= 1, got {getattr(self, key)}")
        if self.probe_every < 0:
            raise ConfigError(f"adv.probe_every must be >= 0 (0 = off), got {self.probe_every}")
        for i, reward in enumerate(self.rewards):
            check_reward(reward, f"adv.rewards[{i}]")
        if self.collapse_d_loss < 0 or self.head_mlp_ratio <= 0:
            raise ConfigError("adv.collapse_d_loss must be >= 0 and adv.head_mlp_ratio > 0")
        if any(t < 1 for t in self.taps):
            raise ConfigError(f"adv.taps are 1-based block numbers, got {list(self.taps)}")
        if not 0.0 <= self.stop_d_auc <= 1.0:
            raise ConfigError(f"adv.stop_d_auc must be in [0, 1] (0 = off), got {self.stop_d_auc}")
        if self.reward_latent_frames < 0 or self.reward_window < 0 or self.adversarial_weight < 0:
            raise ConfigError("adv.reward_latent_frames, adv.reward_window and adv.adversarial_weight must be >= 0")
        if self.reward_latent_frames and self.reward_window:
            raise ConfigError("adv.reward_latent_frames (the first k) and adv.reward_window (k at a random start) "
                              "are two ways to pick the decoded frames: set one")
        self._check_policy()

    def _check_policy(self) -> None:
        p = self.policy
        if p.objective not in ("", "grpo", "prdp"):
            raise ConfigError(f"adv.policy.objective must be '', 'grpo' or 'prdp', got {p.objective!r}")
        if not p.objective:
            return
        if not self.rewards:
            raise ConfigError(f"adv.policy.objective={p.objective} optimises adv.rewards: list at least one")
        if p.sigma <= 0 or p.clip <= 0 or p.beta <= 0 or p.weight <= 0 or p.kl_weight < 0:
            raise ConfigError("adv.policy: sigma, clip, beta and weight must be > 0, kl_weight >= 0")
        if p.group < 2 or (p.objective == "prdp" and p.group % 2):
            raise ConfigError(f"adv.policy.group must be >= 2 (and even for prdp's pairs), got {p.group}")


@dataclass
class APTConfig(RunConfig):
    adv: AdversarialConfig = field(default_factory=AdversarialConfig)
