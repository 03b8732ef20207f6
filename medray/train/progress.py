"""Where training stands: epochs done, the phase, the best validation score so far, the learning
rate scale. Saved in every checkpoint, so a restarted worker continues exactly where it was.

Phase 1 trains with `model.freeze`; phase 2 (transfer learning) fine-tunes the top
`train.fine_tune.layers` at `train.fine_tune.lr`. Early stopping ends the current phase.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class Progress:
    history: list[dict] = field(default_factory=list)
    phase: int = 1
    phase_epochs: int = 0
    phase_stopped: str | None = None
    best: float | None = None
    best_epoch: int = 0
    lr_scale: float = 1.0
    lr_reduced_at: int = 0
    stop_reasons: list[str] = field(default_factory=list)

    @property
    def epoch(self) -> int:
        return len(self.history)

    def phase_budget(self, train_config) -> int:
        return train_config.epochs if self.phase == 1 else train_config.fine_tune.epochs

    def phase_done(self, train_config) -> bool:
        return self.phase_stopped is not None or self.phase_epochs >= self.phase_budget(train_config)

    def next_phase(self) -> None:
        self.phase, self.phase_epochs, self.phase_stopped = self.phase + 1, 0, None
        self.lr_scale, self.lr_reduced_at = 1.0, self.epoch

    def learning_rate(self, train_config) -> float:
        base = train_config.lr if self.phase == 1 else train_config.fine_tune.lr
        return base * self.lr_scale

    def record(self, metrics: dict, train_config) -> None:
        """Add one epoch's metrics; reduce the rate or stop the phase on a plateau."""
        self.history.append(metrics)
        self.phase_epochs += 1
        value = metrics[train_config.monitor]
        better = (self.best is None or (value < self.best if train_config.monitor_mode == "min" else value > self.best))
        if better:
            self.best, self.best_epoch = value, self.epoch
        phase_start = self.epoch - self.phase_epochs
        stale = self.epoch - max(self.best_epoch, self.lr_reduced_at, phase_start)
        if train_config.lr_plateau_patience and stale >= train_config.lr_plateau_patience:
            self.lr_scale *= train_config.lr_plateau_factor
            self.lr_reduced_at = self.epoch
        without_gain = self.epoch - max(self.best_epoch, phase_start)
        if train_config.early_stopping_patience and without_gain >= train_config.early_stopping_patience:
            self.phase_stopped = (f"phase {self.phase} stopped early at epoch {self.epoch}: no "
                                  f"{train_config.monitor} improvement for {without_gain} epochs")
            self.stop_reasons.append(self.phase_stopped)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, state: dict) -> Progress:
        return cls(**state)
