"""One training run on one split: whole bags at batch size 1, early stopping on validation AUROC.

Resuming gives the same weights as never stopping: all randomness is either derived from (seed, epoch)
(bag order, tile subsampling) or restored from `last.pt` (torch/CUDA/NumPy/Python RNG states, used by
dropout), and the optimizer, learning-rate step and early-stopping state are saved with the weights after
every epoch. Only whole epochs are saved, so an interrupted epoch is redone from its start.
"""

import csv
import io
import json
import math
import random
import resource
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import Progress
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from wsi_pipeline.errors import WsiError
from wsi_pipeline.metrics import auroc
from wsi_pipeline.progress import progress_bar
from wsi_pipeline.stores.atomic import write_bytes_atomic, write_text_atomic
from wsi_pipeline.stores.feature_bag import compute_autocast
from wsi_pipeline.stores.run_folder import (
    CHECKPOINT_FILE,
    HISTORY_FILE,
    RESULT_FILE,
    Checkpoint,
    load_checkpoint,
    save_checkpoint,
    torch_bytes,
)
from wsi_pipeline.train.bags import BagCache, tile_statistics
from wsi_pipeline.train.calibration import fit_temperature, nll
from wsi_pipeline.train.config import TrainConfig
from wsi_pipeline.train.process import ProcessRole

LAST_FILE = "last.pt"
HISTORY_COLUMNS = (
    "epoch",
    "train_loss",
    "val_loss",
    "val_loss_calibrated",
    "val_auroc",
    "lr",
    "seconds",
    "peak_memory_mb",
)

EpochHook = Callable[[int, dict[str, float]], None]


@dataclass(frozen=True)
class FoldData:
    fold: int
    out_dir: Path
    train_ids: list[str]  # sorted; the per-epoch order is drawn from (seed, epoch)
    val_ids: list[str]
    targets: dict[str, int]  # slide_id -> class index


# Validation losses (nats per bag) closer than this are a tie for `select_on: loss`.
LOSS_TIE = 1e-3


@dataclass
class EarlyStopping:
    """Best = lowest val loss (ties: higher AUROC), or with `select_on="auroc"` the other way round; with
    `select_on="last"` every epoch is the new best, so the run keeps the schedule's final epoch and never stops
    early (no model's default: measured for `abmil` in benchmarks/RESULTS.md, it helps on some sets only).

    Why loss by default: a validation set of a few dozen bags saturates AUROC at 1.0 within an epoch or two,
    and keeping that first lucky epoch stopped training while the model still improved
    (benchmarks/bench_real.py). The loss keeps moving while the ranking is tied. No stop before `min_epochs`.
    """

    patience: int
    min_epochs: int = 1
    select_on: str = "loss"
    best_auroc: float = -math.inf
    best_loss: float = math.inf
    best_epoch: int = 0
    bad_epochs: int = 0
    epochs_seen: int = 0

    def _better(self, auroc: float, loss: float) -> bool:
        """Losses within LOSS_TIE count as tied: an untrainable fold otherwise creeps towards log 2 by 1e-5 an
        epoch and never stops (measured on Fox, benchmarks/bench_real.py)."""
        if self.select_on == "last":
            return True
        auroc = -math.inf if math.isnan(auroc) else auroc
        if self.select_on == "auroc":
            return (auroc, -loss) > (self.best_auroc, -self.best_loss)
        if abs(loss - self.best_loss) <= LOSS_TIE:
            return auroc > self.best_auroc
        return loss < self.best_loss

    def update(self, auroc: float, loss: float, epoch: int) -> bool:
        """Record an epoch; True when it is the new best."""
        self.epochs_seen = epoch
        if self._better(auroc, loss):
            self.best_auroc, self.best_loss, self.best_epoch, self.bad_epochs = auroc, loss, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.bad_epochs >= self.patience and self.epochs_seen >= self.min_epochs


@dataclass(frozen=True)
class FoldResult:
    fold: int
    best_epoch: int
    best_val_auroc: float
    epochs_run: int
    stopped_early: bool
    seconds: float
    temperature: float = 1.0  # fitted on the validation bags after training; 1 = not calibrated
    val_nll_uncalibrated: float | None = None
    val_nll_calibrated: float | None = None
    # > 1: the fold's members (train/members.py): the fields above then summarise them (temperature 1: each
    # member has its own, in member_<m>/result.json)
    members: int = 1


def lr_at(step: int, total_steps: int, warmup_steps: int, lr: float, min_lr: float) -> float:
    """Linear warm-up from 0 over `warmup_steps`, then cosine from `lr` to `min_lr` at `total_steps`."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def class_weights(targets: list[int], n_classes: int) -> torch.Tensor:
    """n / (C * n_c): each class contributes equally to the loss whatever its share of the bags."""
    counts = np.bincount(targets, minlength=n_classes).astype(np.float64)
    weights = len(targets) / (n_classes * np.maximum(counts, 1))
    return torch.tensor(weights, dtype=torch.float32)


def weight_matrices(model: nn.Module) -> list[nn.Parameter]:
    """The trainable parameters of 2 or more dimensions: what weight decay and the L2 penalty act on. Biases
    and norm scales (1-d) are left free, the usual transformer recipe."""
    return [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]


def l2_penalty(params: list[nn.Parameter], l2: float) -> torch.Tensor | float:
    """(l2 / 2) * the squared norm of `params`, added to each bag's loss (0.0 when l2 is 0).

    Why a penalty in the loss as well as AdamW's decay: with more feature dimensions than training slides
    (Tiger: 230-d, 128 training bags; TCGA: 2,048-d tiles, a few hundred slides) the training bags are
    separable, and Adam's step does not shrink as the data's gradient vanishes, so a decoupled decay of 1e-2
    lets the weights grow towards a max-margin solution (on Tiger `mean_linear` ended with temperatures at the
    cap of 20 and AUROC 0.822 against 0.859 for a logistic regression on the same means). The penalty's
    gradient does not vanish; weights settle where it balances the data's, as in an L2-regularised logistic
    regression (`benchmarks/RESULTS.md`, "Aggregators on real features")."""
    if not l2:
        return 0.0
    return 0.5 * l2 * sum(p.square().sum() for p in params)


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW, with weight decay on the weight matrices only.

    Fused (one kernel over all parameters) on CPU and CUDA: at batch size 1 on bags of a few hundred tiles
    the optimizer step is a large share of a training step, and torch's default on CPU loops over the
    tensors one by one (`vit_sf`, 3.2 M parameters, one thread: 134 ms a step against 45 ms fused)."""
    decay = weight_matrices(model)
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in decay + no_decay)
    return torch.optim.AdamW(groups, lr=cfg.lr, fused=fused or None)


def weight_average(model: nn.Module, ema_epochs: float | None, steps_per_epoch: int) -> AveragedModel | None:
    """An exponential moving average of `model`'s weights over about `ema_epochs` epochs of optimizer steps,
    or None when off. Its buffers (feature norm, class means, temperature) are copied once: training never
    changes them.

    Why: at batch size 1 every step follows one bag, so the weights at the end of an epoch carry the last few
    bags' noise, and on small cohorts the epoch chosen by validation is partly luck. The average over the
    last epoch or two is a cheap ensemble of the points the run went through. Measured for `abmil`
    (benchmarks/RESULTS.md, "Weight averaging"): it lifted bag accuracy on Fox and Elephant and lowered
    AUROC on Tiger, so it is an option and no model's default."""
    if ema_epochs is None:
        return None
    decay = 1.0 - 1.0 / max(1.0, ema_epochs * steps_per_epoch)
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay))


def peak_memory_mb(device: torch.device) -> float:
    """GPU: peak allocated this epoch. CPU: the process's peak resident set so far (Linux reports KiB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rng_state(device: torch.device) -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, py_state, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else [],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "python": [version, list(py_state), gauss_next],
    }


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, py_state, gauss_next = state["python"]
    random.setstate((version, tuple(py_state), gauss_next))


def _write_history(path: Path, rows: list[dict[str, float]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=HISTORY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    write_text_atomic(path, buffer.getvalue())


@dataclass
class _State:
    """Everything that changes during training; saved to `last.pt` after every epoch."""

    epoch: int = 0  # epochs completed
    step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


class FoldTrainer:
    """Trains one model on one fold. Built fresh for each fold by `wsi_pipeline.train.run`."""

    def __init__(
        self,
        cfg: TrainConfig,
        model: nn.Module,
        model_config: dict[str, Any],
        class_names: tuple[str, ...],
        in_dim: int,
        cache: BagCache,
        data: FoldData,
        device: torch.device,
        role: ProcessRole,
        console: Console | None,
    ) -> None:
        self.cfg, self.model, self.model_config = cfg, model, model_config
        self.class_names, self.in_dim, self.cache, self.data = class_names, in_dim, cache, data
        self.device, self.role, self.console = device, role, console if role.writes else None
        # Before `wrap`: DistributedDataParallel copies buffers then.
        stats = tile_statistics(cache, data.train_ids, data.targets, len(class_names))
        if cfg.feature_norm == "standardize":
            model.set_feature_norm(stats.mean, stats.std)
        model.set_class_means(stats.class_means)
        # What training steps go through (DistributedDataParallel under torchrun); `self.model` stays the
        # plain module, so checkpoints and `last.pt` hold its state dict whatever the number of processes.
        self.net = role.wrap(model, device)
        self.optimizer = make_optimizer(model, cfg)
        self.penalised = weight_matrices(model)
        n_classes = len(class_names)
        weights = class_weights([data.targets[s] for s in data.train_ids], n_classes)
        # Summed, not averaged: a weighted *mean* over a batch of one bag divides the weight back out.
        self.train_loss = nn.CrossEntropyLoss(
            weight=weights.to(device) if cfg.class_weighted_loss else None, reduction="sum"
        )
        self.steps_per_epoch = len(role.my_bags(data.train_ids))
        self.total_steps = cfg.epochs * self.steps_per_epoch
        self.warmup_steps = round(cfg.warmup_epochs * self.steps_per_epoch)
        self.amp = cfg.amp and device.type == "cuda"
        self.stopper = EarlyStopping(cfg.patience, cfg.min_epochs, cfg.select_on)
        self.state = _State()
        # What validation, the checkpoint and calibration see: the weights' moving average when `ema_epochs`
        # is set, else the trained module itself.
        self.average = weight_average(model, cfg.ema_epochs, self.steps_per_epoch)
        self.scored = self.average.module if self.average is not None else model

    # -- persistence ---------------------------------------------------------------------------------
    def _save_last(self) -> None:
        payload = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "state": {**asdict(self.state)},
            "stopper": asdict(self.stopper),
            "rng": _rng_state(self.device),
        }
        if self.average is not None:
            payload["average"] = self.average.state_dict()
        write_bytes_atomic(self.data.out_dir / LAST_FILE, torch_bytes(payload))

    def restore(self) -> bool:
        """Continue from `last.pt` when there is one; False when starting fresh."""
        path = self.data.out_dir / LAST_FILE
        if not path.is_file():
            return False
        try:
            payload = torch.load(path, map_location=self.device, weights_only=True)
            self.model.load_state_dict(payload["model"])
            self.optimizer.load_state_dict(payload["optimizer"])
            if self.average is not None:
                self.average.load_state_dict(payload["average"])
        except Exception as exc:
            raise WsiError(f"{path}: cannot resume from it ({type(exc).__name__}: {exc})") from exc
        self.state = _State(**payload["state"])
        self.stopper = EarlyStopping(**payload["stopper"])
        _set_rng_state(payload["rng"], self.device)
        return True

    def _save_best(self, epoch: int, val_auroc: float) -> None:
        save_checkpoint(
            self.data.out_dir / CHECKPOINT_FILE,
            Checkpoint(
                model_name=self.cfg.model,
                model_config=self.model_config,
                in_dim=self.in_dim,
                class_names=self.class_names,
                state_dict=self.scored.state_dict(),
                epoch=epoch,
                val_auroc=val_auroc,
            ),
        )

    # -- one epoch -----------------------------------------------------------------------------------
    def _autocast(self) -> torch.autocast:
        """The one precision policy (`stores.feature_bag.compute_autocast`), which `wsi eval` enters too."""
        return compute_autocast(self.device.type, self.amp)

    def _step(self, x: torch.Tensor, target: int) -> torch.Tensor:
        """One optimizer step on one whole bag; returns its (detached) data loss, without the L2 penalty."""
        lr = lr_at(self.state.step, self.total_steps, self.warmup_steps, self.cfg.lr, self.cfg.min_lr)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        with self._autocast():
            logits = self.net(x.unsqueeze(0))
        loss = self.train_loss(logits.float(), torch.tensor([target], device=self.device))
        self.optimizer.zero_grad(set_to_none=True)
        (loss + l2_penalty(self.penalised, self.cfg.l2)).backward()
        if self.cfg.grad_clip_norm is not None:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip_norm)
        self.optimizer.step()
        if self.average is not None:
            self.average.update_parameters(self.model)
        self.state.step += 1
        return loss.detach()

    def _train_epoch(self, epoch: int, progress: Progress | None) -> float:
        """Mean training loss of the epoch's bags, over all ranks."""
        self.net.train()
        if self.role.rank > 0:
            # Other ranks draw their own dropout masks, from (seed, fold, epoch, rank) so that a resumed run
            # draws the same ones; rank 0 continues the RNG state that `last.pt` saves.
            seed = np.random.SeedSequence([self.cfg.seed, self.data.fold, epoch, self.role.rank])
            torch.manual_seed(int(seed.generate_state(1)[0]))
        rng = np.random.default_rng([self.cfg.seed, epoch])
        order = [self.data.train_ids[i] for i in rng.permutation(len(self.data.train_ids))]
        mine = self.role.my_bags(order)
        task = (
            progress.add_task(f"fold {self.data.fold} epoch {epoch}", total=len(mine), rate="")
            if progress
            else None
        )
        # The loss is summed on the device and read once per epoch: a float() per step would wait for the
        # GPU after every bag (issue 18: the loop at the step's speed).
        total: torch.Tensor | float = 0.0
        tiles, start = 0, time.perf_counter()
        for slide_id in mine:
            x = self.cache.get(slide_id)
            if self.cfg.max_tiles is not None and x.shape[0] > self.cfg.max_tiles:
                keep = np.sort(rng.choice(x.shape[0], self.cfg.max_tiles, replace=False))
                x = x[torch.from_numpy(keep).to(x.device)]
            total = total + self._step(x, self.data.targets[slide_id])
            tiles += x.shape[0]
            if progress is not None and task is not None:
                elapsed = time.perf_counter() - start
                progress.update(task, advance=1, rate=f"{tiles / elapsed:,.0f} tiles/s")
        if progress is not None and task is not None:
            progress.remove_task(task)
        sums = self.role.gather((float(total), len(mine)))
        return sum(t for t, _ in sums) / max(1, sum(n for _, n in sums))

    @torch.no_grad()
    def logits(self, slide_ids: list[str]) -> np.ndarray:
        """(n, n_classes) float32 logits (divided by the model's temperature), whole bags."""
        self.scored.eval()
        # A rank's share of a small val set may be empty. Logits stay on the device until the end: one
        # copy back per validation instead of a synchronising one per bag.
        out = [torch.empty(0, len(self.class_names), device=self.device)]
        for slide_id in slide_ids:
            with self._autocast():
                out.append(self.scored(self.cache.get(slide_id).unsqueeze(0)).float())
        return torch.cat(out).cpu().numpy()

    def predict(self, slide_ids: list[str]) -> np.ndarray:
        """(n, n_classes) softmax probabilities, whole bags."""
        return torch.softmax(torch.from_numpy(self.logits(slide_ids)), dim=-1).numpy()

    def _load_best(self) -> Checkpoint:
        """Leave the scored model (the weights' average with `ema_epochs`) holding the best epoch's weights, what
        the run folder keeps, and return them."""
        ckpt = load_checkpoint(self.data.out_dir / CHECKPOINT_FILE)
        self.scored.load_state_dict(ckpt.state_dict)
        return ckpt

    def _calibrate(self, ckpt: Checkpoint) -> tuple[float, float, float]:
        """Fit the temperature on the validation bags with the best weights and save it in their checkpoint.
        Returns (T, val NLL before, after). Starts from T = 1, so a rerun after a kill refits the same T."""
        self.scored.temperature.fill_(1.0)
        logits = self.logits(self.data.val_ids)
        targets = np.array([self.data.targets[s] for s in self.data.val_ids])
        temperature = fit_temperature(logits, targets)
        self.scored.temperature.fill_(temperature)
        save_checkpoint(
            self.data.out_dir / CHECKPOINT_FILE, replace(ckpt, state_dict=self.scored.state_dict())
        )
        return temperature, nll(logits, targets), nll(logits, targets, temperature)

    def _validate(self) -> tuple[float, float, float]:
        """(val loss, val AUROC, val loss at the temperature fitted on these logits). Each rank scores its
        share; all see every prediction, so all take the same stopping decision.

        The third is what `select_on: loss` compares when `calibrate` is on: the loss of the probabilities
        the run will deliver. The raw loss punishes confident logits that temperature scaling fixes anyway,
        and on real features it kept the barely trained first epochs (benchmarks/bench_real.py)."""
        mine = self.role.my_share(self.data.val_ids)
        scored: dict[str, np.ndarray] = {}
        for share in self.role.gather(dict(zip(mine, self.logits(mine), strict=True))):
            scored.update(share)
        logits = np.stack([scored[s] for s in self.data.val_ids])
        targets = np.array([self.data.targets[s] for s in self.data.val_ids])
        probs = torch.softmax(torch.from_numpy(logits), dim=-1).numpy()
        loss = nll(logits, targets)
        return loss, auroc(targets, probs), nll(logits, targets, fit_temperature(logits, targets))

    # -- the loop ------------------------------------------------------------------------------------
    def fit(self, on_epoch_end: EpochHook | None = None) -> FoldResult:
        out = self.data.out_dir
        if self.role.writes:
            out.mkdir(parents=True, exist_ok=True)
        with progress_bar(self.console, "{task.fields[rate]}") as progress:
            while self.state.epoch < self.cfg.epochs and not self.stopper.should_stop:
                epoch = self.state.epoch + 1
                if self.device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(self.device)
                start = time.perf_counter()
                train_loss = self._train_epoch(epoch, progress)
                val_loss, val_auroc, val_loss_calibrated = self._validate()
                seconds = time.perf_counter() - start
                row = {
                    "epoch": epoch,
                    "train_loss": train_loss,
                    "val_loss": val_loss,
                    "val_loss_calibrated": val_loss_calibrated,
                    "val_auroc": val_auroc,
                    "lr": self.optimizer.param_groups[0]["lr"],
                    "seconds": seconds,
                    "peak_memory_mb": peak_memory_mb(self.device),
                }
                selected_loss = val_loss_calibrated if self.cfg.calibrate else val_loss
                improved = self.stopper.update(val_auroc, selected_loss, epoch)
                self.state.epoch, self.state.seconds = epoch, self.state.seconds + seconds
                self.state.history.append(row)
                if self.role.writes:
                    if improved:
                        self._save_best(epoch, val_auroc)
                    _write_history(out / HISTORY_FILE, self.state.history)
                    self._save_last()
                if self.console is not None:
                    mark = " [green]best[/]" if improved else ""
                    self.console.print(
                        f"fold {self.data.fold} epoch {epoch}/{self.cfg.epochs}: train loss {train_loss:.4f}, "
                        f"val loss {val_loss:.4f}, val AUROC {val_auroc:.4f}{mark}, {seconds:.1f} s, "
                        f"{len(self.data.train_ids) / seconds:.2f} bags/s"
                    )
                if on_epoch_end is not None:
                    on_epoch_end(epoch, row)
        result = FoldResult(
            fold=self.data.fold,
            best_epoch=self.stopper.best_epoch,
            best_val_auroc=self.stopper.best_auroc,
            epochs_run=self.state.epoch,
            stopped_early=self.stopper.should_stop and self.state.epoch < self.cfg.epochs,
            seconds=self.state.seconds,
        )
        if self.role.writes:
            ckpt = self._load_best()
            if self.cfg.calibrate:
                t, before, after = self._calibrate(ckpt)
                result = replace(result, temperature=t, val_nll_uncalibrated=before, val_nll_calibrated=after)
                say = self.console.print if self.console is not None else (lambda *_: None)
                say(f"fold {self.data.fold}: temperature {t:.3g} (val NLL {before:.4f} -> {after:.4f})")
            write_fold_result(out, result)
            (out / LAST_FILE).unlink(missing_ok=True)
        return result


def write_fold_result(out_dir: Path, result: FoldResult) -> None:
    """result.json: written last, it marks the fold (or member) finished."""
    write_text_atomic(out_dir / RESULT_FILE, json.dumps(asdict(result), indent=2) + "\n")


def read_fold_result(out_dir: Path) -> FoldResult | None:
    path = out_dir / RESULT_FILE
    if not path.is_file():
        return None
    return FoldResult(**json.loads(path.read_text(encoding="utf-8")))
