"""The pretraining loop, top to bottom: set up, resume, then step until done or told to stop.

One process per device (``accelerate launch`` starts them; plain ``python`` is one process).
Each optimizer step:

1. sets the learning rate (linear warmup, then cosine to ``min_lr``);
2. runs ``grad_accumulation`` micro-batches, syncing DDP gradients only on the last;
3. clips the global gradient norm, steps the optimizer, updates the EMA weights;
4. logs, validates and checkpoints on their schedules.

SIGTERM and SIGUSR1 (SLURM preemption) make every rank stop after the current step and
write a checkpoint; the next launch with the same ``run_dir`` resumes from it exactly.
"""

from __future__ import annotations

import json
import signal
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from omegaconf import OmegaConf
from timm.utils import ModelEmaV3
from torchvision.utils import save_image
from tqdm import tqdm

from common.atomic import write_atomic
from common.config import config_yaml
from common.memory import peak_rss_gb
from common.schedule import warmup_cosine
from model.network import GaussianPredictor
from model.release import load_predictor
from train.checkpoint import checkpoints, load_checkpoint, save_checkpoint
from train.config import TrainConfig
from train.data import BatchStream, check_shards, manifest_summary
from train.objective import perceptual_loss, training_losses
from train.trackers import RunLog
from train.validate import validate, validation_batches


def mixed_precision(setting: str) -> str:
    if setting != "auto":
        return setting
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


def peak_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    return peak_rss_gb()


class StopSignal:
    """Remembers SIGTERM/SIGUSR1; every rank agrees to stop once any rank has seen one."""

    def __init__(self) -> None:
        self.seen = False
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        self.seen = True

    def requested(self, accelerator: Accelerator) -> bool:
        if accelerator.num_processes == 1:
            return self.seen
        flag = torch.tensor([float(self.seen)], device=accelerator.device)
        return accelerator.reduce(flag, reduction="sum").item() > 0


def train(config: TrainConfig) -> dict:
    """Run (or resume) the job in ``config.run_dir``; return the final trainer state."""
    # --- set-up --------------------------------------------------------------------------
    run_dir = Path(config.run_dir)
    tracker = None if config.logging.tracker == "none" else config.logging.tracker
    # cpu=True on a machine without CUDA makes several launched processes a gloo DDP group
    accelerator = Accelerator(
        mixed_precision=mixed_precision(config.mixed_precision),
        log_with=tracker,
        project_dir=str(run_dir),
        cpu=not torch.cuda.is_available(),
    )
    rank, world, device = accelerator.process_index, accelerator.num_processes, accelerator.device
    check_shards(config.data, rank, world)
    set_seed(config.seed)
    resolved = config_yaml(config)
    net = GaussianPredictor(config.network)
    if config.init_from:
        net.load_state_dict(load_predictor(config.init_from, expected=config.network).state_dict())
    optim = config.optim
    optimizer = torch.optim.AdamW(
        net.parameters(), lr=optim.lr, betas=optim.betas, weight_decay=optim.weight_decay
    )
    net, optimizer = accelerator.prepare(net, optimizer)
    perceptual = perceptual_loss(config.loss)
    perceptual = perceptual.to(device) if perceptual is not None else None
    ema = ModelEmaV3(accelerator.unwrap_model(net), decay=config.ema_decay, use_warmup=True)
    accelerator.register_for_checkpointing(ema)

    # --- resume --------------------------------------------------------------------------
    state = {"step": 0, "world": world, "validation": {}}
    data_state = {"position": 0, "shards_read": {}}
    previous = checkpoints(run_dir)
    if previous:
        state, data_state = load_checkpoint(accelerator, previous[-1], config.network)
        if state["world"] != world:
            accelerator.print(f"resuming on {world} processes (was {state['world']}): the data order changes")
            state["world"] = world
        accelerator.print(f"resumed from {previous[-1]} at step {state['step']}")
    step = state["step"]
    if accelerator.is_main_process:  # only now: a refused resume must not overwrite the run's record
        run_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(run_dir / "config.yaml", resolved)
        summary = manifest_summary(config.data.shards)
        if summary is not None:
            write_atomic(run_dir / "data_manifest.json", json.dumps(summary, indent=1))
    batches = BatchStream(
        config.data,
        config.batch_size,
        config.num_workers,
        segment_batches=config.checkpoint_every * optim.grad_accumulation,
        rank=rank,
        world=world,
        position=data_state["position"],
    )
    batches.shards_read = data_state["shards_read"]
    as_dict = OmegaConf.to_container(OmegaConf.structured(config))
    log = RunLog(
        accelerator,
        config.logging.tracker,
        config.logging.project,
        run_dir,
        as_dict,
        resume_step=step if previous else None,
    )
    val_batches = []
    if config.validation.shards and accelerator.is_main_process:
        val_batches = validation_batches(
            config.data, config.validation.shards, config.batch_size, config.validation.batches
        )
    stop = StopSignal()

    def checkpoint() -> Path:
        state["step"] = step
        return save_checkpoint(
            accelerator,
            run_dir,
            step,
            state,
            {"position": batches.position, "shards_read": batches.shards_read},
            ema.module,
            resolved,
            config.keep_checkpoints,
        )

    def run_validation() -> None:
        metrics, grid = validate(
            ema.module, val_batches, device, config.loss, config.validation.grid_items, perceptual
        )
        state["validation"] = {"step": step, **metrics}
        log.scalars({f"val/{k}": v for k, v in metrics.items()}, step)
        (run_dir / "val").mkdir(exist_ok=True)
        save_image(grid, run_dir / "val" / f"step_{step:08d}.png")
        log.image("val/grid", grid, step)

    # --- steps ---------------------------------------------------------------------------
    if val_batches and step == 0:
        run_validation()  # the starting point, for comparison
    net.train()
    samples_per_step = config.batch_size * optim.grad_accumulation * world
    progress = tqdm(
        total=config.max_steps,
        initial=step,
        disable=not accelerator.is_main_process,
        desc="train",
        unit="step",
        dynamic_ncols=True,
    )
    window_start, window_steps = time.perf_counter(), 0
    while step < config.max_steps:
        lr = warmup_cosine(
            step, steps=config.max_steps, lr=optim.lr, min_lr=optim.min_lr, warmup=optim.warmup_steps
        )
        for group in optimizer.param_groups:
            group["lr"] = lr
        terms_sum: dict[str, torch.Tensor] = {}  # stays on the device: no sync per micro-batch
        for micro in range(optim.grad_accumulation):
            batch = {k: v.to(device, non_blocking=True) for k, v in next(batches).items()}
            last = micro == optim.grad_accumulation - 1
            with nullcontext() if last else accelerator.no_sync(net):
                terms = training_losses(net, batch, config.loss, perceptual)
                accelerator.backward(terms["total"] / optim.grad_accumulation)
            for name, value in terms.items():
                terms_sum[name] = terms_sum.get(name, 0.0) + value.detach() / optim.grad_accumulation
        grad_norm = accelerator.clip_grad_norm_(net.parameters(), optim.grad_clip or float("inf"))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ema.update(accelerator.unwrap_model(net), step=step)
        step += 1
        window_steps += 1
        progress.update(1)

        if step % config.logging.every == 0 or step == config.max_steps:
            elapsed = time.perf_counter() - window_start
            across_ranks = accelerator.reduce(torch.stack(list(terms_sum.values())).float(), "mean")
            losses = dict(zip(terms_sum, across_ranks.tolist(), strict=True))
            progress.set_postfix(loss=f"{losses['total']:.4f}", lr=f"{lr:.2e}")
            log.scalars(
                {
                    **{f"train/{k}": v for k, v in losses.items()},
                    "train/lr": lr,
                    "train/grad_norm": float(grad_norm),
                    "perf/samples_per_s": samples_per_step * window_steps / elapsed,
                    "perf/step_s": elapsed / window_steps,
                    "perf/peak_memory_gb": peak_memory_gb(device),
                },
                step,
            )
            window_start, window_steps = time.perf_counter(), 0

        if config.validation.shards and (step % config.validation.every == 0 or step == config.max_steps):
            if accelerator.is_main_process:
                run_validation()
            accelerator.wait_for_everyone()

        stopping = stop.requested(accelerator)
        if step % config.checkpoint_every == 0 or step == config.max_steps or stopping:
            path = checkpoint()
            if stopping:
                accelerator.print(f"stopped by signal at step {step}; checkpoint {path}")
                break
    progress.close()
    log.close()
    return {**state, "step": step, "run_dir": str(run_dir), "main_process": accelerator.is_main_process}
