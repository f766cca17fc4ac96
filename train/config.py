"""The pretraining job's typed config: one dataclass tree, merged from a YAML preset and overrides.

Every field a user can set lives here; ``gavs-train`` rejects any other key. The resolved
tree is written as ``RUN_DIR/config.yaml`` and into every checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from model.network import NetworkConfig
from train.data import DataConfig
from train.objective import LossConfig


@dataclass
class OptimConfig:
    lr: float = 2e-4
    min_lr: float = 2e-6  # the cosine ends here at max_steps
    warmup_steps: int = 500
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 1.0  # max global gradient norm; 0 turns clipping off
    grad_accumulation: int = 1  # micro-batches per optimizer step


@dataclass
class ValidationConfig:
    shards: str = ""  # held-out shards; empty: no validation
    every: int = 500  # optimizer steps between validations
    batches: int = 8  # fixed batches, drawn once with seed 0 (so numbers compare across steps)
    grid_items: int = 4  # items shown in the saved image grid


@dataclass
class LoggingConfig:
    tracker: Literal["wandb", "tensorboard", "none"] = "wandb"  # wandb: offline unless a key is configured
    project: str = "gavs-pretrain"
    every: int = 10  # optimizer steps between scalar logs


@dataclass
class TrainConfig:
    run_dir: str = "runs/pretrain"
    seed: int = 0
    max_steps: int = 100_000
    batch_size: int = 16  # per process, per micro-batch
    num_workers: int = 4  # dataloader workers per process
    mixed_precision: Literal["auto", "bf16", "fp16", "no"] = "auto"  # auto: bf16 on CUDA that supports it
    ema_decay: float = 0.999
    checkpoint_every: int = 1000  # optimizer steps; the data stream also restarts here (exact resume)
    keep_checkpoints: int = 3
    init_from: str | None = None  # a release folder or hub id to start the network from
    data: DataConfig = field(default_factory=DataConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
