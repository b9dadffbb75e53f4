"""Stage 2 as a harness stage: alternating discriminator and generator updates (Seaweed-APT, arXiv 2501.08316).

    G(z, c) = z - v(z, 1, c)           initialised from the stage-1 EMA
    D = teacher copy + token heads     initialised from the ORIGINAL teacher, all used weights trained
    D step: L_D = softplus(-D(x)) + softplus(D(G(z))) + lambda * ||D(x) - D(x + sigma n)||^2
    G step: L_G = softplus(-D(G(z)))   then EMA of G
Adam with beta1 0 (the paper's "RMSProp") for both, no weight decay, no gradient clipping. Optional
(off by default): APT2's relativistic loss and approximate R2, SeedVR2's feature matching
(apt/adversarial/losses.py), mismatched-caption negatives, spliced-clip negatives, a first-frame
(image) term, D judging G's samples re-encoded through the VAE, lazy approximate R1, the G step's
real reference taken from the D step's real pass (adv.real_reference).

Logged besides the losses: the real-minus-fake logit margin, a running real-vs-fake AUC (what D
ranks, which its accuracy at threshold 0 hides when all logits move together) and, on a fixed held
batch, how well D tells a clip's own caption from another clip's (caption_auc).
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from apt import flow
from apt.adversarial import losses
from apt.adversarial.config import APTConfig
from apt.backbone import WanBackbone
from apt.config import ConfigError
from apt.distributed import DistInfo, all_reduce_mean, grad_norm, parallelize_backbone
from apt.ema import ema_update, trainable_with_ema
from apt.estimate import per_sample_flops, tokens_of
from apt.generator import OneStepGenerator
from apt.previews import SampleWriter
from discriminator.model import Discriminator
from discriminator.parallel import parallelize_discriminator


class TrainingCollapsed(RuntimeError):
    pass


def make_optimizer(kind: str, param_groups, lr: float, beta2: float) -> torch.optim.Optimizer:
    """The paper's optimiser: "RMSProp, alpha 0.9 (= Adam with beta1 0, beta2 0.9)", i.e. Adam with
    beta1 0 and bias correction (its first update moves each weight by lr). torch's RMSprop has no
    bias correction: its first updates are 1/sqrt(1 - beta2^t) = 3.2x, 2.3x, 1.9x ... the lr."""
    # fused: one kernel per parameter for the whole Adam update (on CPU half the time of foreach, which
    # had already cut the optimiser several-fold against torch's per-tensor default on CPU); the same
    # arithmetic. RMSprop has no fused kernel: foreach.
    if kind == "adam":
        return torch.optim.Adam(param_groups, lr=lr, betas=(0.0, beta2), eps=1e-8, weight_decay=0.0, fused=True)
    return torch.optim.RMSprop(param_groups, lr=lr, alpha=beta2, eps=1e-8, weight_decay=0.0, foreach=True)


def lazy_weight(weight: float, every: int, step: int) -> float:
    """Lazy regularisation (StyleGAN2's): a term paid on one step in `every`, weighted by `every` so that
    its average weight is `weight`; 0 on the other steps."""
    return weight * every if step % every == 0 else 0.0


@contextmanager
def _frozen(params: list[torch.nn.Parameter]):
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def splice_frames(latents: torch.Tensor) -> torch.Tensor:
    """Each clip's first latent frame followed by the later latent frames of the previous clip in the
    batch: real frames, but a clip whose content jumps after its first frame."""
    if latents.shape[2] < 2:
        raise ValueError("splicing needs at least two latent frames")
    return torch.cat([latents[:, :, :1], latents.roll(1, 0)[:, :, 1:]], 2)


@dataclass
class RealReference:
    """The D step's pass on one micro-batch's real clips, kept for the G step (adv.real_reference):
    the re-noising it drew and D's outputs there, detached. features: per tap, the batch mean of the
    token states (1, N, D) in float32, all that feature matching reads, so that B clips' token states
    are not held through the G step."""

    t: torch.Tensor
    noise: torch.Tensor
    logits: torch.Tensor
    features: list[torch.Tensor]

    @classmethod
    def of(cls, t: torch.Tensor, noise: torch.Tensor, logits: torch.Tensor, features: list[torch.Tensor],
           part: int = 0, parts: int = 1):
        """From a D call whose batch stacked `parts` equal groups of clips (the real clips are group
        `part`): logits are the real clips' already, features still the whole call's."""
        return cls(t, noise, logits.detach(),
                   [f.chunk(parts)[part].detach().float().mean(0, keepdim=True) for f in features])


class AdversarialPostTraining:
    name = "apt"

    def __init__(self, cfg: APTConfig, dist: DistInfo, teacher: WanBackbone, generator_init: WanBackbone,
                 previews: SampleWriter, probe: dict | None = None, vae=None,
                 negative_text: torch.Tensor | None = None):
        """probe: a fixed held batch ({"latent", "text"}) for the caption diagnostic; None turns it off.
        vae: the VideoVAE that decodes G's samples for the rewards (needed when adv.rewards is set).
        negative_text: the embedded negative prompt (1, L, D) of the distillation term's CFG (needed when
        adv.distill_weight is set; the teacher is then kept, frozen, as its denoiser)."""
        self.cfg, self.dist, self.previews = cfg, dist, previews
        self.accum = cfg.train.grad_accum(dist.world_size)
        adv, par = cfg.adv, cfg.parallel
        generator, ema = trainable_with_ema(generator_init, par, copy_init=False)
        self.generator, self.ema = OneStepGenerator(generator), OneStepGenerator(ema)
        self.discriminator = Discriminator.from_teacher(teacher, taps=tuple(adv.taps) or None,
                                                        mlp_ratio=adv.head_mlp_ratio)
        parallelize_discriminator(self.discriminator, par)
        self.opt_g = make_optimizer(adv.optimizer, self.generator.parameters(), adv.lr_generator, adv.beta2)
        self.d_trainable = [p for p in self.discriminator.parameters() if p.requires_grad]
        heads = {id(p) for p in self.discriminator.head_parameters()}
        self.opt_d = make_optimizer(adv.optimizer, [
            {"params": [p for p in self.d_trainable if id(p) not in heads]},
            {"params": [p for p in self.d_trainable if id(p) in heads], "lr": adv.lr_heads or adv.lr_discriminator},
        ], adv.lr_discriminator, adv.beta2)
        if adv.temporal_negative_weight > 0 and cfg.train.micro_batch_size < 2:
            raise ConfigError("adv.temporal_negative_weight splices each clip with another clip of its micro-batch: "
                              "train.micro_batch_size must be >= 2")
        if adv.mismatch_weight > 0 and cfg.train.micro_batch_size < 2:
            raise ConfigError("adv.mismatch_weight pairs each clip with another clip's caption of its micro-batch: "
                              "it needs train.micro_batch_size >= 2")
        self.low_d_loss_steps = self.separated_steps = 0
        self.logit_window = {"real": deque(maxlen=adv.auc_window), "fake": deque(maxlen=adv.auc_window)}
        self.probe = self._probe_slice(probe) if probe is not None and adv.probe_every else None
        self.rewards = self.vae = None
        if adv.rewards or adv.reencode_latent_frames:
            if vae is None:
                raise ValueError("adv.rewards and adv.reencode_latent_frames need the VAE to decode the "
                                 "generator's samples")
            self.vae = vae.to(dist.device)
        self.teacher = self.negative_text = None
        if adv.distill_weight > 0:
            if negative_text is None and adv.distill_guidance_scale != 1.0:
                raise ValueError("adv.distill_weight with guidance needs the embedded negative prompt")
            # D and G hold their own copies: the teacher object itself is free to be the frozen denoiser
            self.teacher = teacher.eval().requires_grad_(False)
            parallelize_backbone(self.teacher, replace(par, activation_checkpointing=False))
            self.negative_text = negative_text.to(dist.device) if negative_text is not None else None
        if adv.rewards:
            from apt.rewards import build_rewards

            self.rewards = build_rewards(adv.rewards).to(dist.device)

    # Checkpoint the backbones, not the G wrappers: "ema" then has the same keys as stage 1's, so
    # apt.run_folder.load_generator and export read either stage's checkpoint.
    def modules(self):
        return {"generator": self.generator.backbone, "ema": self.ema.backbone, "discriminator": self.discriminator}

    def optimizers(self):
        return {"generator": (self.generator.backbone, self.opt_g), "discriminator": (self.discriminator, self.opt_d)}

    def flops_per_sample(self, latent_shape: tuple[int, ...], text_tokens: int) -> float:
        g = self.generator.backbone
        return per_sample_flops("apt", dict(g.config), tokens_of(latent_shape, g.patch_size), text_tokens,
                                g.num_blocks, self.discriminator.taps, self.cfg.adv.head_mlp_ratio,
                                self.cfg.parallel.activation_checkpointing)["per_sample"]

    def _fake(self, x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        return self.generator(torch.randn_like(x), text)

    def _shown(self, fake: torch.Tensor) -> torch.Tensor:
        """G's samples as D judges them: with adv.reencode_latent_frames, their first latent frames read
        back through the VAE (differentiably), so that D sees what the decoder will show."""
        k = self.cfg.adv.reencode_latent_frames
        if not k:
            return fake
        return self.vae.reencode_with_grad(fake, min(k, fake.shape[2]), self.cfg.adv.reward_checkpointing)

    def _d_logits(self, x0: torch.Tensor, text: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
                  return_features: bool = False):
        return self.discriminator(x0, text, t=t, noise=noise, return_features=return_features)

    def _renoising(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One re-noising (t ~ shift(U(0,1), d_shift) per sample, noise) for D calls that must share it."""
        return flow.sample_timesteps(x.shape[0], self.cfg.adv.d_shift).to(x.device), torch.randn_like(x)

    def _d_pass(self, x0: torch.Tensor, text: torch.Tensor, penalty_weight: float, sigma: float,
                keep_reference: bool = False):
        """D logits at a fresh re-noising, and the approximate R1/R2 penalty for a sigma-perturbed
        copy at the SAME t and noise (so only sigma * n differs); the penalty is None when off. Third,
        with keep_reference, the pass as a RealReference for the G step (else None)."""
        t, noise = self._renoising(x0)
        if penalty_weight <= 0:
            out = self._d_logits(x0, text, t, noise, return_features=keep_reference)
            if not keep_reference:
                return out, None, None
            return out[0], None, RealReference.of(t, noise, *out)
        # Both copies in one call: the same activation memory as two calls, but one pass's
        # per-layer overhead and FSDP collectives instead of two.
        both = self._d_logits(torch.cat([x0, losses.perturb(x0, sigma)]), torch.cat([text, text]),
                              torch.cat([t, t]), torch.cat([noise, noise]), return_features=keep_reference)
        logits, perturbed = (both[0] if keep_reference else both).chunk(2)
        reference = RealReference.of(t, noise, logits, both[1], part=0, parts=2) if keep_reference else None
        return logits, losses.approximate_r1(logits, perturbed), reference

    def _d_loss(self, real_logits, fake_logits):
        if self.cfg.adv.loss == "relativistic":
            return losses.relativistic_d_loss(real_logits, fake_logits)
        return losses.d_loss(real_logits, fake_logits)

    def _g_loss(self, real_logits, fake_logits):
        """real_logits are only needed (and only computed) for the relativistic loss."""
        if self.cfg.adv.loss == "relativistic":
            return losses.relativistic_g_loss(real_logits, fake_logits)
        return losses.g_loss(fake_logits)

    def train_step(self, next_batch, step: int) -> dict[str, float]:
        m: dict[str, float] = {}
        if self.cfg.adv.share_generator_pass:
            # G's samples, with their graph, computed once: the D step reads them detached, the G step
            # backpropagates through them after D's update (G does not change in between, so they are
            # exactly what a second forward would give). Costs G's activations through the D step.
            shared = list(self._micro_batches(next_batch, grad=True))
            detached = [(x, text, caption, fake.detach()) for x, text, caption, fake in shared]
            references = self._discriminator_step(detached, step, m)
            self._generator_step(shared, step, m, references)
        else:  # one micro-batch at a time, each half drawing its own data
            self._discriminator_step(self._micro_batches(next_batch, grad=False), step, m)
            self._generator_step(self._micro_batches(next_batch, grad=True), step, m)
        ema_update(self.ema, self.generator, self.cfg.adv.ema_decay)
        m["d_auc"] = losses.auc(torch.tensor(self.logit_window["real"]), torch.tensor(self.logit_window["fake"]))
        if self.probe is not None and (step + 1) % self.cfg.adv.probe_every == 0:
            m["caption_auc"] = self._caption_auc()
        self._guard(step, m)
        return m

    def _probe_slice(self, probe: dict) -> dict:
        """This rank's share of the held batch (every rank runs the sharded D on its own clips), with a
        fixed re-noising, so that the diagnostic moves only when D does."""
        mine = slice(self.dist.rank, None, self.dist.world_size)
        x, text = probe["latent"][mine], probe["text"][mine]
        if len(x) < 2:
            raise ConfigError(f"adv.probe_size={self.cfg.adv.probe_size} gives this rank fewer than 2 held clips "
                              f"for the caption diagnostic: raise it or set adv.probe_every=0")
        g = torch.Generator().manual_seed(1234 + self.dist.rank)
        t = flow.sample_timesteps(len(x), self.cfg.adv.d_shift, generator=g)
        dev = self.dist.device
        return {"x": x.to(dev), "text": text.to(dev), "t": t.to(dev),
                "noise": torch.randn(x.shape, generator=g).to(dev)}

    @torch.no_grad()
    def _caption_auc(self) -> float:
        """P(D(x, own caption) > D(x, another clip's caption)) on the held clips."""
        p = self.probe
        own = self._d_logits(p["x"], p["text"], p["t"], p["noise"])
        other = self._d_logits(p["x"], p["text"].roll(1, 0), p["t"], p["noise"])
        return losses.auc(own.float().cpu(), other.float().cpu())

    def _micro_batches(self, next_batch, grad: bool):
        """The update's micro-batches, drawn as they are used: (latents, text, captions, G's samples)."""
        dev = self.dist.device
        for _ in range(self.accum):
            batch = next_batch()
            x, text = batch["latent"].to(dev), batch["text"].to(dev)
            with torch.set_grad_enabled(grad):
                fake = self._fake(x, text)
            yield x, text, batch["caption"], fake

    def _add(self, m: dict[str, float], key: str, value) -> None:
        """Accumulate a metric as its mean over the update's micro-batches."""
        m[key] = m.get(key, 0.0) + float(value) / self.accum

    def _discriminator_step(self, micro_batches, step: int, m: dict[str, float]) -> list[RealReference | None]:
        """D's update; returns, per micro-batch, its real pass as the G step's reference where
        adv.real_reference=discriminator_step and this update's G step needs one (else None)."""
        adv = self.cfg.adv
        matching = lazy_weight(adv.feature_matching_weight, adv.feature_matching_every, step) > 0
        keep = adv.real_reference == "discriminator_step" and (adv.loss == "relativistic" or matching)
        references = []
        # The non-saturating L_D is a sum of a real and a fake half: backpropagating the fake half
        # (with its aR2) before the real pass keeps two D passes' activations alive, not three or four.
        separable = adv.loss == "nonsaturating"
        # lazy regularisation: the penalty on every r1_every-th step, weighted up to the same average
        r1_weight = lazy_weight(adv.r1_weight, adv.r1_every, step)
        # With no penalty this step (lazy aR1), the fake and the real pass hold two passes' activations
        # either way: they run as one call of twice the batch (one set of per-layer overheads and
        # collectives), with the same re-noising draws and the same loss.
        fused = separable and r1_weight == 0 and adv.r2_weight == 0
        self.opt_d.zero_grad(set_to_none=True)
        for x, text, _, fake in micro_batches:
            if adv.reencode_latent_frames:
                with torch.no_grad():
                    fake = self._shown(fake)
            if adv.mismatch_weight > 0:  # real clips, wrong captions: negatives, backpropagated on their own
                t, noise = self._renoising(x)
                mismatched = self._d_logits(x, text.roll(1, 0), t, noise)
                (adv.mismatch_weight * losses.d_loss_fake(mismatched) / self.accum).backward()
                self._add(m, "d_mismatch", mismatched.mean().item())
            if adv.temporal_negative_weight > 0:  # real clips that turn into another clip: negatives too
                spliced = splice_frames(x)
                t, noise = self._renoising(spliced)
                logits = self._d_logits(spliced, text, t, noise)
                (adv.temporal_negative_weight * losses.d_loss_fake(logits) / self.accum).backward()
                self._add(m, "d_temporal_negative", logits.mean().item())
            if fused:
                (t_fake, n_fake), (t_real, n_real) = self._renoising(fake), self._renoising(x)
                out = self._d_logits(torch.cat([fake, x]), torch.cat([text, text]), torch.cat([t_fake, t_real]),
                                     torch.cat([n_fake, n_real]), return_features=keep)
                fake_logits, real_logits = (out[0] if keep else out).chunk(2)
                reference = RealReference.of(t_real, n_real, real_logits, out[1], part=1, parts=2) if keep else None
                r1 = r2 = None
                loss_d = self._d_loss(real_logits, fake_logits)
                (loss_d / self.accum).backward()
            else:
                fake_logits, r2, _ = self._d_pass(fake, text, adv.r2_weight, adv.r2_sigma)
                r2_term = adv.r2_weight * r2 if r2 is not None else 0.0
                if separable:
                    ((losses.d_loss_fake(fake_logits) + r2_term) / self.accum).backward()
                    fake_logits, r2_term = fake_logits.detach(), 0.0
                real_logits, r1, reference = self._d_pass(x, text, r1_weight, adv.r1_sigma, keep_reference=keep)
                loss_d = self._d_loss(real_logits, fake_logits)
                total = loss_d + r2_term + (r1_weight * r1 if r1 is not None else 0.0)
                (total / self.accum).backward()
            references.append(reference)
            if adv.first_frame_weight > 0:  # the first latent frames alone, as images
                self._first_frame_d_step(x, text, fake, r1_weight, m)
            for key, value in (("aR1", r1), ("aR2", r2)):
                if value is not None:
                    self._add(m, key, value.item())
            self._add(m, "d_loss", loss_d.item())
            self._add(m, "d_real", real_logits.mean().item())
            self._add(m, "d_fake", fake_logits.mean().item())
            self._add(m, "d_margin", (real_logits.mean() - fake_logits.mean()).item())
            self._add(m, "d_accuracy", losses.d_accuracy(real_logits, fake_logits))
            self.logit_window["real"].extend(real_logits.detach().float().cpu().tolist())
            self.logit_window["fake"].extend(fake_logits.detach().float().cpu().tolist())
        m["d_grad_norm"] = grad_norm(self.discriminator.parameters())
        self.opt_d.step()
        return references

    def _first_frame_d_step(self, x: torch.Tensor, text: torch.Tensor, fake: torch.Tensor, r1_weight: float,
                            m: dict[str, float]) -> None:
        """L_D on the clips' first latent frames (real against G's), with approximate R1 on the real ones when
        this step has it; backpropagated here, weighted by adv.first_frame_weight."""
        adv = self.cfg.adv
        fake_logits, _, _ = self._d_pass(fake[:, :, :1], text, 0.0, adv.r1_sigma)
        real_logits, r1, _ = self._d_pass(x[:, :, :1], text, r1_weight, adv.r1_sigma)
        loss = self._d_loss(real_logits, fake_logits) + (r1_weight * r1 if r1 is not None else 0.0)
        (adv.first_frame_weight * loss / self.accum).backward()
        self._add(m, "d_first_frame_margin", (real_logits.mean() - fake_logits.mean()).item())

    def _generator_step(self, micro_batches, step: int, m: dict[str, float],
                        references: list[RealReference | None] | None = None) -> None:
        """G's update; references: the D step's real passes, one per micro-batch, or None (fresh ones)."""
        adv = self.cfg.adv
        distill = lazy_weight(adv.distill_weight, adv.distill_every, step)
        matching = lazy_weight(adv.feature_matching_weight, adv.feature_matching_every, step)
        self.opt_g.zero_grad(set_to_none=True)
        # D's weights are not updated here: no weight gradients for them (nor their reduce-scatter),
        # only the gradient through D to G's samples.
        with _frozen(self.d_trainable):
            for (x, text, captions, fake), reference in zip(micro_batches, references or itertools.repeat(None)):
                if self.rewards is None:
                    loss = self._adversarial_loss(x, text, fake, m, matching, reference)
                    if distill:
                        loss = loss + distill * self._distill_loss(fake, text, m)
                    (loss / self.accum).backward()
                    continue
                # Rewards: the adversarial and the reward gradients meet at G's sample, each backpropagated
                # on its own (D's activations and the decoder's never coexist), then G's backward runs once.
                sample = fake.detach().requires_grad_(True)
                if adv.adversarial_weight:
                    adversarial = self._adversarial_loss(x, text, sample, m, matching, reference)
                    (adv.adversarial_weight * adversarial).backward()
                if distill:
                    (distill * self._distill_loss(sample, text, m)).backward()
                (-self._reward(sample, captions, m)).backward()
                fake.backward(sample.grad / self.accum)
        m["g_grad_norm"] = grad_norm(self.generator.parameters())
        self.opt_g.step()

    def _generator_logits(self, x: torch.Tensor, text: torch.Tensor, fake: torch.Tensor, features: bool = False,
                          reference: RealReference | None = None):
        """D on G's samples at a fresh re-noising and, where the relativistic loss or feature matching
        needs it, on the real clips at the same t and noise as a reference only (no gradient; else None).
        Given the D step's reference, G's samples are re-noised as its real clips were and D's outputs
        there stand in for the real pass."""
        if reference is not None:
            fake_out = self._d_logits(fake, text, reference.t, reference.noise, return_features=features)
            return fake_out, (reference.logits, reference.features) if features else reference.logits
        t, noise = self._renoising(x)
        fake_out = self._d_logits(fake, text, t, noise, return_features=features)
        real_out = None
        if self.cfg.adv.loss == "relativistic" or features:
            with torch.no_grad():
                real_out = self._d_logits(x, text, t, noise, return_features=features)
        return fake_out, real_out

    def _adversarial_loss(self, x: torch.Tensor, text: torch.Tensor, fake: torch.Tensor, m: dict,
                          matching_weight: float = 0.0, reference: RealReference | None = None) -> torch.Tensor:
        """L_G for G's samples `fake` (plus matching_weight x feature matching where > 0), logged into m;
        reference: the D step's real pass (adv.real_reference), or None for a fresh one."""
        adv = self.cfg.adv
        matching = matching_weight > 0
        fake = self._shown(fake)
        fake_out, real_out = self._generator_logits(x, text, fake, matching, reference)
        fake_logits, real_logits = (fake_out[0], real_out[0]) if matching else (fake_out, real_out)
        loss_g = self._g_loss(real_logits, fake_logits)
        self._add(m, "g_loss", loss_g.item())
        if adv.first_frame_weight > 0:
            frame_fake, frame_real = self._generator_logits(x[:, :, :1], text, fake[:, :, :1])
            loss_g = loss_g + adv.first_frame_weight * self._g_loss(frame_real, frame_fake)
        if matching:
            fm = losses.feature_matching(real_out[1], fake_out[1])
            self._add(m, "feature_matching", fm.item())
            return loss_g + matching_weight * fm
        return loss_g

    def _distill_loss(self, fake: torch.Tensor, text: torch.Tensor, m: dict) -> torch.Tensor:
        """ADD's distillation loss: G's samples re-noised to t, the frozen teacher's guided x0 prediction
        there as a fixed target, squared error weighted by c(t) = 1 - t (ADD's alpha_t: the teacher's
        prediction from nearly pure noise is a blurred average, worth little)."""
        adv = self.cfg.adv
        b = fake.shape[0]
        t = flow.sample_timesteps(b, adv.distill_shift).to(fake.device)
        with torch.no_grad():
            x_t = flow.add_noise(fake.detach(), torch.randn_like(fake), t)
            negative = self.negative_text.expand(b, -1, -1) if self.negative_text is not None else None
            target = flow.euler_sample_from(self.teacher, x_t, t, text, adv.distill_steps, adv.distill_guidance_scale,
                                            negative)
        per_sample = (fake.float() - target.float()).square().flatten(1).mean(1)
        loss = ((1 - t.float()) * per_sample).mean()
        self._add(m, "distill", loss.item())
        return loss

    def _reward(self, sample: torch.Tensor, captions: list[str], m: dict) -> torch.Tensor:
        """The weighted reward of G's samples, decoded (the first adv.reward_latent_frames latent frames)."""
        adv = self.cfg.adv
        videos = self.vae.decode_with_grad(sample, adv.reward_latent_frames, adv.reward_checkpointing)
        total, each = self.rewards(videos, captions)
        self._add(m, "reward", total.mean().item())
        for name, scores in each.items():
            self._add(m, f"reward_{name}", scores.mean().item())
        return total.mean()

    def _guard(self, step: int, m: dict[str, float]) -> None:
        """Stop with a clear message when training has collapsed (the last checkpoint is intact)."""
        m = all_reduce_mean(m)  # every rank must take the same decision, or the others hang
        bad = [k for k, v in m.items() if not math.isfinite(v)]
        if bad:
            raise TrainingCollapsed(f"non-finite {', '.join(bad)} at step {step + 1}: lower the learning rates or "
                                    f"raise adv.r1_weight, then resume from the last checkpoint")
        adv = self.cfg.adv
        self.low_d_loss_steps = self.low_d_loss_steps + 1 if m["d_loss"] < adv.collapse_d_loss else 0
        if self.low_d_loss_steps >= adv.collapse_patience:
            raise TrainingCollapsed(
                f"discriminator loss below {adv.collapse_d_loss} for {self.low_d_loss_steps} steps "
                f"(D wins outright, G gets no signal): check adv.r1_weight / adv.r1_sigma and the batch size")
        self.separated_steps = self.separated_steps + 1 if adv.stop_d_auc and m["d_auc"] > adv.stop_d_auc else 0
        if self.separated_steps >= adv.collapse_patience:
            raise TrainingCollapsed(
                f"D tells G's samples from real clips with AUC above {adv.stop_d_auc} for {self.separated_steps} "
                f"steps at step {step + 1}: the samples have left the data (reward hacking, if rewards are on). "
                f"Use an earlier checkpoint, or lower the reward weights / raise adv.adversarial_weight")

    @torch.no_grad()
    def sample(self, step: int, out_dir: Path) -> None:
        self.previews.write(self.ema, step, out_dir)
