"""What stage 2 logs about its discriminator besides the losses: a running real-vs-fake AUC (what D
ranks, which its accuracy at threshold 0 hides when all logits move together) and, on a fixed held
batch, how well D tells a clip's own caption from another clip's (caption_auc)."""

from __future__ import annotations

import torch

from apt.adversarial import losses
from apt.core import flow
from apt.core.config import ConfigError


class LogitWindow:
    """The last `size` real and fake logits of this rank, kept on their device."""

    def __init__(self, size: int):
        self.size = size
        self.real: torch.Tensor | None = None
        self.fake: torch.Tensor | None = None

    def _push(self, kept: torch.Tensor | None, new: torch.Tensor) -> torch.Tensor:
        new = new.detach().float().flatten()
        return (new if kept is None else torch.cat([kept, new]))[-self.size:]

    def extend(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> None:
        self.real, self.fake = self._push(self.real, real_logits), self._push(self.fake, fake_logits)

    def auc(self) -> torch.Tensor:
        return losses.auc(self.real, self.fake)

    def state_dict(self) -> dict:
        return {k: (v.cpu() if v is not None else torch.zeros(0)) for k, v in (("real", self.real), ("fake", self.fake))}

    def load_state_dict(self, state: dict, device: torch.device) -> None:
        self.real, self.fake = (state[k].to(device) if len(state[k]) else None for k in ("real", "fake"))


class CaptionProbe:
    """P(D(x, own caption) > D(x, another clip's caption)) on this rank's share of a fixed held batch,
    at a fixed re-noising, so that the diagnostic moves only when D does."""

    def __init__(self, probe: dict, rank: int, world_size: int, d_shift: float, device: torch.device,
                 probe_size: int):
        mine = slice(rank, None, world_size)  # every rank runs the sharded D on its own clips
        x, text = probe["latent"][mine], probe["text"][mine]
        if len(x) < 2:
            raise ConfigError(f"adv.probe_size={probe_size} gives this rank fewer than 2 held clips "
                              f"for the caption diagnostic: raise it or set adv.probe_every=0")
        g = torch.Generator().manual_seed(1234 + rank)
        t = flow.sample_timesteps(len(x), d_shift, generator=g)
        self.x, self.text, self.t = x.to(device), text.to(device), t.to(device)
        self.noise = torch.randn(x.shape, generator=g).to(device)

    @torch.no_grad()
    def auc(self, critic) -> torch.Tensor:
        own = critic.logits(self.x, self.text, self.t, self.noise)
        other = critic.logits(self.x, self.text.roll(1, 0), self.t, self.noise)
        return losses.auc(own.float(), other.float())
