"""What every classifying route shares: find the model for the input sent, check the solver
settings against the model and the service's bounds, run the beats through the model's dynamic
batcher in chunks, and count what happened."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.runtime.batching import Arrivals, ModelBatcher, Ticket
from service.signal.beats import CLASSES
from service.errors import invalid, quoted
from service.metrics import ServiceMetrics
from service.models.solver import FIXED_STEP_METHODS, SolverConfig, SolverError
from service.models.registry import LoadedModel, ModelRegistry
from service.settings import Settings

INPUT_NAMES = {"beat": "187-sample beats in 'beats'", "context": "context beats in 'context_beats'"}


@dataclass(frozen=True)
class Result:
    probabilities: np.ndarray  # (n, classes), calibrated where the model's card says how
    nfe: np.ndarray | None  # (n,) per beat; ODE models only
    seconds: float  # time in the predictor
    labels: np.ndarray  # (n,) class indices, as the model's decision gives them
    confidence: np.ndarray  # (n,) probability of each beat's label
    review: np.ndarray | None  # (n,) bool; None where the model has no review threshold
    af_criteria: np.ndarray | None = None  # (n,) bool where the decision read the strip's rhythm (service.signal.rhythm)

    @classmethod
    def decided(cls, loaded: LoadedModel, inputs: np.ndarray, probabilities: np.ndarray, nfe: np.ndarray | None,
                seconds: float, af_criteria: np.ndarray | None = None) -> "Result":
        """The predictor's probabilities of `inputs` through the model's decision (service.models.decision);
        `af_criteria`, each beat's flag from its strip's rhythm (service.signal.rhythm), where a strip
        was sent, kept in the result where the decision reads it."""
        flags = af_criteria if loaded.decision.s_as_n_in_af else None
        d = loaded.decision(probabilities, inputs, af_criteria=flags)
        return cls(d.probabilities, nfe, seconds, d.labels, d.confidence, d.review, flags)


class Inference:
    def __init__(self, settings: Settings, registry: ModelRegistry, metrics: ServiceMetrics):
        self.settings, self.registry, self.metrics = settings, registry, metrics
        self.arrivals = Arrivals()
        # model -> its default solver settings (frozen), checked once: most requests set none
        self.default_solvers = {name: self.checked_solver(None, loaded, ("solver",))
                                for name, loaded in registry.models.items()}
        self.batchers = {
            name: ModelBatcher(name, loaded.predictor, self.arrivals, metrics, settings.max_batch_beats,
                               settings.max_batch_wait_ms / 1000, settings.max_queued_beats,
                               settings.inline_batch_beats, self.default_solvers[name])
            for name, loaded in registry.models.items()}

    def start(self) -> None:
        for batcher in self.batchers.values():
            batcher.start()

    async def stop(self) -> None:
        for batcher in self.batchers.values():
            await batcher.stop()

    def saturated(self) -> bool:
        """Some model's queue is full: new inference requests would only be refused after being read."""
        return any(b.queued_beats >= b.max_queued_beats for b in self.batchers.values())

    def model_kinds(self) -> dict[str, str]:
        """Loaded model -> the input kind it reads."""
        return {name: m.input_kind for name, m in self.registry.models.items()}

    def default_model(self, kind: str) -> str:
        return self.settings.default_model if kind == "beat" else self.settings.default_context_model

    def resolve(self, name: str | None, where: tuple, kind: str | None = None) -> LoadedModel:
        """The model named (or the default for the input `kind`); a 422 naming what it reads when
        the request sends the other kind of input."""
        name = name or self.default_model(kind or "context")
        loaded = self.registry.models.get(name)
        if loaded is None:
            raise invalid(where, f"unknown model {quoted(name)}; available: {', '.join(sorted(self.registry.models))}",
                          name)
        if kind is not None and loaded.input_kind != kind:
            others = sorted(n for n, m in self.registry.models.items() if m.input_kind == kind)
            raise invalid(where, f"model {name!r} reads {INPUT_NAMES[loaded.input_kind]}, not "
                          f"{INPUT_NAMES[kind]}; models for that input: {', '.join(others) or 'none'}", name)
        return loaded

    def solver_for(self, requested: dict | None, loaded: LoadedModel, where: tuple) -> SolverConfig | None:
        """The solver settings of a request (only the fields the client set), checked against the
        model and the service's bounds."""
        if not requested:
            return self.default_solvers[loaded.name]
        return self.checked_solver(requested, loaded, where)

    def checked_solver(self, requested: dict | None, loaded: LoadedModel, where: tuple) -> SolverConfig | None:
        settings = self.settings
        if not loaded.predictor.is_ode:
            if requested:
                raise invalid(where, f"model {loaded.name!r} is not an ODE model; omit the solver settings")
            return None
        default = {k: v for k, v in loaded.card.get("default_solver", {}).items() if k in ("method", "rtol", "atol")}
        cfg = SolverConfig(**{**default, **(requested or {}), "max_num_steps": settings.max_num_steps})
        for name in ("rtol", "atol"):
            value = getattr(cfg, name)
            if not settings.min_tolerance <= value <= settings.max_tolerance:
                raise invalid((*where, name), f"{name} must be within [{settings.min_tolerance:g}, "
                              f"{settings.max_tolerance:g}]", value)
        if cfg.step_size is not None:
            if cfg.method not in FIXED_STEP_METHODS:
                raise invalid((*where, "step_size"), f"step_size applies to fixed-step methods "
                              f"({', '.join(FIXED_STEP_METHODS)}), not {cfg.method}", cfg.step_size)
            if cfg.step_size < settings.min_step_size:
                raise invalid((*where, "step_size"), f"step_size must be at least {settings.min_step_size:g}",
                              cfg.step_size)
        return cfg

    async def classify(self, loaded: LoadedModel, inputs: np.ndarray, solver: SolverConfig | None,
                       deadline: float, ticket: Ticket | None = None, solver_loc: tuple = ("body", "solver"),
                       af_criteria: np.ndarray | None = None) -> Result:
        """Probabilities and per-beat NFE of `inputs`, through the model's batcher in chunks of at
        most max_beats_per_request beats (so one long strip does not hold up everyone else);
        `af_criteria`, the beats' flags where they are a strip's."""
        if ticket is not None:
            ticket.done()
        batcher = self.batchers[loaded.name]
        chunk = self.settings.max_beats_per_request
        parts = []
        for start in range(0, len(inputs), chunk):
            try:
                parts.append(await batcher.predict(inputs[start:start + chunk], solver, deadline))
            except SolverError as err:
                raise invalid(solver_loc, f"{err}; loosen rtol/atol or use a fixed-step method") from err
        if len(parts) == 1:
            probabilities, nfe = parts[0].probabilities, parts[0].nfe if solver is not None else None
        elif parts:
            probabilities = np.concatenate([p.probabilities for p in parts])
            nfe = None if solver is None else np.concatenate([p.nfe for p in parts])
        else:
            probabilities, nfe = np.zeros((0, len(CLASSES))), None if solver is None else np.zeros(0, np.int64)
        result = Result.decided(loaded, inputs, probabilities, nfe, sum(p.seconds for p in parts), af_criteria)
        self.count(loaded, solver, result)
        return result

    def count(self, loaded: LoadedModel, solver: SolverConfig | None, result: Result) -> None:
        for index, count in enumerate(np.bincount(result.labels, minlength=len(CLASSES)).tolist()):
            if count:
                self.metrics.child(self.metrics.beats, loaded.name, CLASSES[index]).inc(count)
        if result.review is not None and result.review.any():
            self.metrics.child(self.metrics.review, loaded.name).inc(int(result.review.sum()))
        if solver is not None and result.nfe is not None:
            histogram = self.metrics.child(self.metrics.ode_nfe, loaded.name, solver.method)
            for value in result.nfe.tolist():
                histogram.observe(value)
