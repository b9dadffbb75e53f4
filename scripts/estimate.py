"""Thin entry point: per-GPU memory and FLOPs of a training step; see apt/estimate.py.

    python scripts/estimate.py --model wan2.1-1.3b --gpus 64 --micro-batch 1 --frames 49 --height 720 --width 1280
    python scripts/estimate.py --model wan2.1-14b --gpus 1024 --batch 2048 --json
    python scripts/estimate.py --check      # also measure a tiny CPU run and compare
"""

from apt.estimate import main

if __name__ == "__main__":
    main()
