"""Rebuild the shipped toy components from scratch: VAE, then text encoder, then teacher; and the toy
alignment reward (its own folder, apt/assets/toy-reward/).

    python scripts/build_toy.py --component all [--out apt/assets/toy-wan]
    python scripts/build_toy.py --component reward
    python scripts/build_toy.py --component decoder      # the fast decoder (after the VAE)
    python scripts/build_toy.py --component vae-decoder --out COPY   # train COPY's VAE decoder further

Each step records its time and final losses in <out>/build_report.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from apt.toy.components import TOY_MODEL_DIR


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--component", choices=["vae", "text", "teacher", "reward", "decoder", "vae-decoder", "all"],
                        default="all", help="what to train (default: all, in that order; vae-decoder is not part "
                        "of all: it trains the folder's VAE decoder further, the encoder and the latent space "
                        "unchanged)")
    parser.add_argument("--out", type=Path, default=TOY_MODEL_DIR,
                        help="diffusers-layout folder to write (default: the shipped one)")
    parser.add_argument("--reward-out", type=Path, default=None,
                        help="folder of the reward model (default: the shipped apt/assets/toy-reward)")
    parser.add_argument("--steps", type=int, default=None, help="override the component's training steps")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--continue-teacher", action="store_true",
                        help="train the folder's existing teacher further (on clips of --seed) instead of from scratch")
    parser.add_argument("--seed", type=int, default=0, help="teacher: the seed of its fresh clips (default 0)")
    args = parser.parse_args(argv)
    if args.component == "vae-decoder" and not (args.out / "vae").is_dir():
        parser.error(f"--component vae-decoder trains the VAE in {args.out}/vae further, and there is none")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    steps = {} if args.steps is None else {"steps": args.steps}
    if args.component in ("vae", "all"):
        from apt.toy.train_vae import train_vae

        train_vae(args.out, **steps)
    if args.component == "vae-decoder":
        from apt.toy.train_vae import finetune_vae_decoder

        finetune_vae_decoder(args.out, **steps)
    if args.component in ("text", "all"):
        from apt.toy.train_text import train_text_encoder

        train_text_encoder(args.out, **steps)
    if args.component in ("teacher", "all"):
        from apt.toy.train_teacher import train_teacher

        train_teacher(args.out, seed=args.seed, continue_training=args.continue_teacher, **steps)
    if args.component in ("decoder", "all"):
        from apt.cli.train_decoder import TOY_RECIPE, TrainDecoderConfig
        from apt.toy.report import record
        from apt.training.decoder_training import train

        recipe = {**TOY_RECIPE, **steps}
        # a rebuild replaces the shipped decoder
        report = train(TrainDecoderConfig(model=str(args.out), out=str(args.out / "fast_decoder"), overwrite=True,
                                          **recipe))
        record(args.out, "fast_decoder", {k: report[k] for k in ("steps", "latent_noise", "clips", "parameters",
                                                                 "train_seconds_this_run", "holdout_psnr_db_vs_vae")})
    if args.component in ("reward", "all"):
        from apt.toy.reward import REWARD_DIR
        from apt.toy.train_reward import train_reward

        print(train_reward(args.reward_out or REWARD_DIR, **steps))


if __name__ == "__main__":
    main()
