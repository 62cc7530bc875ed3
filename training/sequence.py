"""A sequence stage over a strip's beats, trained end to end with the per-beat network.

Every beat's context input goes through the per-beat network's encoder and body
(service.models.networks) to its 64-dim state z_i. A recurrent stage reads z_1, z_2, ... in time
order, and beat i's label is read from z_i and the stage's state after beat i + look_ahead: the
look-ahead is bounded, so a live strip gets a beat's label `look_ahead` beats late, and beats past
it never change it. What a beat's class shows in the beats around it (a run, bigeminy, the
compensatory pause after a premature beat) can reach its label this way.

Two stages:
- "gru": a GRU over the states; its hidden state jumps from beat to beat;
- "odernn": an ODE-RNN (Rubanova, Chen and Duvenaud 2019): between two beats the hidden state
  evolves by dh/dt = f(h) over the real RR interval in seconds (solved with torchdiffeq, at the
  solver settings given, as the ODE body is), then a GRU cell takes in the beat.

Training draws chunks of consecutive beats of a record (clean, or one of its augmented views), so
the network learns on sequences as strips present them; the loss is the per-beat recipe's weighted
cross-entropy. `cross_validate_sequence` scores a stage on the folds and with the pooled held-out
scoring of `ecg-crossval` (`ecg-crossval --sequence gru|odernn`). Measured there and not shipped:
neither stage beat the per-beat network (docs/models.md).
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn
from torchdiffeq import odeint

from service.models.networks import BeatClassifier, SolverConfig, per_beat_rms_norm
from service.models.solver import DEFAULT_STEP_SIZE, FIXED_STEP_METHODS
from service.signal.beats import CLASSES
from training.data import BeatSet

STAGES = ("gru", "odernn")
LOOK_AHEAD = 2  # beats after a beat that its label may read
HIDDEN = 32
CHUNK_BEATS = 32  # consecutive beats per training sequence
MAX_GAP_S = 3.0  # longer pauses evolve the hidden state as far as a 3 s pause does
MIT_FS = 360.0  # the records' sampling rate: BeatSet.samples are indices at it
# Training solves the between-beat ODE with two fixed RK4 steps (about 2.5x faster per batch than
# dopri5 at 1e-3 there); prediction uses the solver settings given, by default dopri5 at 1e-3.
TRAINING_GAP_SOLVER = SolverConfig(method="rk4", step_size=0.5)


class GapDynamics(nn.Module):
    """dh/ds = gap * f(h) over s in [0, 1]: each sequence's own interval (seconds) mapped onto one
    solve, so sequences with different RR intervals share a batch. Counts its evaluations."""

    def __init__(self, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, hidden))
        self.gap = torch.zeros(1, 1)
        self.nfe = 0

    def forward(self, s: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        self.nfe += 1
        return self.gap * self.net(h)


class SequenceClassifier(nn.Module):
    """Per-beat network -> recurrent stage over the beats -> head on (z_i, state after i + look_ahead)."""

    def __init__(self, beat: BeatClassifier, stage: str, hidden: int = HIDDEN, look_ahead: int = LOOK_AHEAD):
        super().__init__()
        if stage not in STAGES:
            raise ValueError(f"unknown sequence stage {stage!r}; choose from {STAGES}")
        if look_ahead < 0:
            raise ValueError("look_ahead must be 0 or more beats")
        self.beat = beat
        self.stage = stage
        self.look_ahead = look_ahead
        width = beat.arch.width
        if stage == "gru":
            self.rnn = nn.GRU(width, hidden, batch_first=True)
        else:
            self.cell = nn.GRUCell(width, hidden)
            self.dynamics = GapDynamics(hidden)
        self.hidden = hidden
        self.head = nn.Linear(width + hidden, len(CLASSES))
        self.register_buffer("span", torch.tensor([0.0, 1.0]), persistent=False)

    @property
    def nfe(self) -> int:
        """Function evaluations of the between-beat solves of the last forward pass (odernn)."""
        return self.dynamics.nfe if self.stage == "odernn" else 0

    def states(self, beats: torch.Tensor, solver: SolverConfig | None = None) -> torch.Tensor:
        """(B, T, d) context inputs -> (B, T, width) per-beat states z, after the body's ReLU."""
        b, t, d = beats.shape
        net = self.beat
        h = net.encoder(beats.reshape(b * t, d))
        h = net.body(h, solver) if net.is_ode else net.body(h)
        return torch.relu(h).reshape(b, t, -1)

    def evolve(self, h: torch.Tensor, gap_s: torch.Tensor, solver: SolverConfig) -> torch.Tensor:
        self.dynamics.gap = gap_s.clamp(0.0, MAX_GAP_S)[:, None]
        if solver.method in FIXED_STEP_METHODS:
            options = {"step_size": solver.step_size or DEFAULT_STEP_SIZE}
        else:
            options = {"norm": per_beat_rms_norm, "max_num_steps": solver.max_num_steps}
        return odeint(self.dynamics, h, self.span, rtol=solver.rtol, atol=solver.atol, method=solver.method,
                      options=options)[-1]

    def forward(self, beats: torch.Tensor, gaps_s: torch.Tensor, lengths: torch.Tensor | None = None,
                solver: SolverConfig | None = None, with_states: bool = False):
        """Logits (B, T, classes) of B sequences of T beats; `gaps_s` (B, T) the RR interval before
        each beat (the first one's is not used); `lengths` (B,) where sequences are padded, so a
        beat near a sequence's end reads that sequence's last state, never the padding's.
        `with_states`: also the per-beat states z (B, T, width)."""
        gap_solver = solver or (TRAINING_GAP_SOLVER if self.training else SolverConfig())
        solver = solver or SolverConfig()
        z = self.states(beats, solver)
        b, t, _ = z.shape
        if self.stage == "gru":
            states, _ = self.rnn(z)
        else:
            self.dynamics.nfe = 0
            h = z.new_zeros(b, self.hidden)
            steps = []
            for i in range(t):
                if i > 0:
                    h = self.evolve(h, gaps_s[:, i], gap_solver)
                h = self.cell(z[:, i], h)
                steps.append(h)
            states = torch.stack(steps, dim=1)
        last = (torch.full((b,), t, dtype=torch.long) if lengths is None else lengths.long()) - 1
        ahead = torch.minimum(torch.arange(t)[None, :] + self.look_ahead, last[:, None])
        read = torch.gather(states, 1, ahead[..., None].expand(-1, -1, states.shape[-1]))
        logits = self.head(torch.cat([z, read], dim=-1))
        return (logits, z) if with_states else logits


def record_runs(records: np.ndarray) -> list[np.ndarray]:
    """Indices of each record's beats (BeatSet keeps a record's beats together, in time order)."""
    _, first = np.unique(records, return_index=True)
    bounds = np.r_[np.sort(first), records.size]
    return [np.arange(a, b) for a, b in zip(bounds[:-1], bounds[1:])]


def gaps_of(samples: np.ndarray, run: np.ndarray) -> np.ndarray:
    """RR interval (s) before each beat of one record's run; 0 before its first."""
    return np.r_[0.0, np.diff(samples[run]) / MIT_FS].astype(np.float32)


def chunks(runs: list[np.ndarray], length: int, generator: torch.Generator) -> list[np.ndarray]:
    """One epoch's training sequences: each record cut into `length`-beat pieces from a random
    offset (a record shorter than `length` gives none)."""
    pieces = []
    for run in runs:
        if run.size < length:
            continue
        offset = int(torch.randint(0, length, (1,), generator=generator)) if run.size > length else 0
        starts = range(offset, run.size - length + 1, length)
        pieces += [run[s:s + length] for s in starts]
    return [pieces[i] for i in torch.randperm(len(pieces), generator=generator).tolist()]


def fit_sequence(model: SequenceClassifier, train: BeatSet, recipe, seed: int, log=None,
                 beat_loss: float = 0.0) -> list[float]:
    """Train the whole network in place on chunks of consecutive beats (recipe: epochs, lr,
    schedule, class and record weighting, augmented views); returns each epoch's mean loss.
    `beat_loss` > 0 adds, at that weight, the loss of the per-beat network's own head on each
    beat alone, which keeps the per-beat states able to classify without the sequence."""
    from training.train import make_optimizer, sample_weights, seed_everything

    generator = seed_everything(seed)
    versions = torch.from_numpy(train.beats[None] if train.views is None
                                else np.concatenate([train.beats[None], train.views]))
    labels = torch.from_numpy(train.labels)
    weights = sample_weights(train.labels, train.records, recipe)
    runs = record_runs(train.records)
    # The clean record's RR intervals serve its augmented views too (they stretch time by at most 10 %).
    gaps = torch.from_numpy(np.concatenate([gaps_of(train.samples, r) for r in runs]))
    per_batch = max(1, recipe.batch_size // CHUNK_BEATS)
    batches = (sum(r.size // CHUNK_BEATS for r in runs) + per_batch - 1) // per_batch  # at most, per epoch
    optimizer, scheduler = make_optimizer(model, recipe, recipe.epochs * batches)
    history = []
    for epoch in range(recipe.epochs):
        model.train()
        pieces = chunks(runs, CHUNK_BEATS, generator)
        total, count = 0.0, 0
        for b in range(0, len(pieces), per_batch):
            index = torch.from_numpy(np.stack(pieces[b:b + per_batch]))  # (B, T)
            version = torch.randint(0, len(versions), (len(index), 1), generator=generator).expand_as(index)
            logits, z = model(versions[version, index], gaps[index], with_states=True)
            target, w = labels[index].reshape(-1), weights[index].reshape(-1)
            per_beat = nn.functional.cross_entropy(logits.reshape(-1, len(CLASSES)), target, reduction="none")
            loss = (per_beat * w).sum() / w.sum()
            if beat_loss > 0:
                alone = nn.functional.cross_entropy(model.beat.head(z).reshape(-1, len(CLASSES)), target,
                                                    reduction="none")
                loss = loss + beat_loss * (alone * w).sum() / w.sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total, count = total + loss.item(), count + 1
        history.append(total / max(count, 1))
        if log:
            log(f"epoch {epoch + 1}/{recipe.epochs}  loss {history[-1]:.4f}")
    return history


def apply_sequence_logit_bias(model: SequenceClassifier, setting: str) -> None:
    """The recipe's logit_bias ("S:-0.5,V:0") on the sequence head, as training.train does on a beat head."""
    from training.train import logit_shift

    with torch.no_grad():
        model.head.bias += torch.from_numpy(logit_shift(setting))


@torch.no_grad()
def predict_sequences(model: SequenceClassifier, beats: np.ndarray, records: np.ndarray, samples: np.ndarray,
                      solver: SolverConfig | None = None) -> np.ndarray:
    """Class probabilities of every beat, each record read as one sequence from its first beat
    (records padded into one batch; a beat reads at most `look_ahead` beats past itself)."""
    model.eval()
    runs = record_runs(records)
    longest = max(r.size for r in runs)
    x = np.zeros((len(runs), longest, beats.shape[1]), dtype=np.float32)
    gaps = np.zeros((len(runs), longest), dtype=np.float32)
    for k, run in enumerate(runs):
        x[k, :run.size] = beats[run]
        gaps[k, :run.size] = gaps_of(samples, run)
    lengths = torch.tensor([r.size for r in runs])
    probabilities = torch.softmax(model(torch.from_numpy(x), torch.from_numpy(gaps), lengths, solver), dim=-1)
    out = np.zeros((len(beats), len(CLASSES)), dtype=np.float32)
    for k, run in enumerate(runs):
        out[run] = probabilities[k, :run.size].numpy()
    return out


def cross_validate_sequence(data: BeatSet, probe: np.ndarray | None, body: str, recipe, stage: str, k: int = 5,
                            seed: int = 0, look_ahead: int = LOOK_AHEAD, beat_loss: float = 0.0, log=print) -> dict:
    """training.crossval.cross_validate for a sequence model: the same folds, the same pooled
    held-out scoring and result layout (so --choose-bias and --calibrate read it)."""
    from training.crossval import folds, pooled_result, summary
    from training.evaluate import classification_metrics
    from training.train import architecture

    clean = np.full(len(data), -1)
    augmented = np.full(len(data), -1)
    probabilities = np.zeros((len(data), len(CLASSES)), dtype=np.float32)
    per_fold = []
    for i, (train_index, test_index) in enumerate(folds(data, k)):
        started = time.perf_counter()
        torch.manual_seed(seed)
        model = SequenceClassifier(BeatClassifier(architecture(body, recipe)), stage, look_ahead=look_ahead)
        fit_sequence(model, data.subset(np.sort(train_index)), recipe, seed, beat_loss=beat_loss)
        apply_sequence_logit_bias(model, recipe.logit_bias)
        test_index = np.sort(test_index)
        held = data.subset(test_index)
        probabilities[test_index] = predict_sequences(model, held.beats, held.records, held.samples)
        clean[test_index] = probabilities[test_index].argmax(axis=1)
        if probe is not None:
            augmented[test_index] = predict_sequences(model, probe[test_index], held.records,
                                                      held.samples).argmax(axis=1)
        records = sorted(set(held.records))
        per_fold.append({"records": records, **summary(classification_metrics(held.labels, clean[test_index]))})
        log(f"fold {i + 1}/{k} ({', '.join(records)}): score {per_fold[-1]['score']:.3f}"
            f" in {time.perf_counter() - started:.0f} s")
    return {"sequence": {"stage": stage, "look_ahead_beats": look_ahead, "hidden": HIDDEN,
                         "chunk_beats": CHUNK_BEATS, "beat_loss": beat_loss},
            **pooled_result(data, per_fold, clean, augmented, probabilities, probe is not None)}
