"""From a network's probabilities to what a clinician reads: calibrated probabilities, a label, its
confidence and a review flag.

A network trained against class imbalance is over- or under-confident on patients it never saw, so
its raw top probability says little about how often it is right. A model's card may carry a
`decision` chosen by patient-grouped cross-validation inside its training records
(training.calibration, `ecg-crossval --calibrate`):

- `temperature` T: probabilities become softmax(log p / T) (temperature scaling, Guo et al. 2017,
  "On calibration of modern neural networks"), fitted to the pooled held-out beats' log-likelihood;
- `f_min_probability`: fusion (F) is called only at or above this calibrated probability, else the
  beat takes its most probable other class (F is learnt from very few patients and costs normal
  beats; the threshold is the cross-validated decision of how much F may cost);
- `review_below`: a beat whose label's calibrated probability (its `confidence`) is below this is
  flagged for review, the threshold at which about 95 % of held-out beats were labelled automatically,
  as Holter technicians work: the machine labels what it is sure of, a person reviews the rest.

A card without a `decision` keeps the network's probabilities and argmax labels, with no review flag.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.signal.beats import CLASSES

F_INDEX = CLASSES.index("F")


@dataclass(frozen=True)
class Decided:
    probabilities: np.ndarray  # (n, classes), calibrated
    labels: np.ndarray  # (n,) class indices
    confidence: np.ndarray  # (n,) calibrated probability of each beat's label
    review: np.ndarray | None  # (n,) bool; None where the model has no review threshold


@dataclass(frozen=True)
class Decision:
    temperature: float = 1.0
    f_min_probability: float | None = None
    review_below: float | None = None

    @classmethod
    def of_card(cls, card: dict) -> "Decision":
        rule = card.get("decision") or {}
        return cls(float(rule.get("temperature", 1.0)), rule.get("f_min_probability"), rule.get("review_below"))

    def calibrated(self, probabilities: np.ndarray) -> np.ndarray:
        """softmax(log p / T) of each row; the rows unchanged when T is 1."""
        probabilities = np.asarray(probabilities, dtype=np.float64)
        if self.temperature == 1.0 or probabilities.size == 0:
            return probabilities
        logits = np.log(np.clip(probabilities, 1e-30, 1.0)) / self.temperature
        logits -= logits.max(axis=1, keepdims=True)
        scaled = np.exp(logits)
        return scaled / scaled.sum(axis=1, keepdims=True)

    def labels(self, calibrated: np.ndarray) -> np.ndarray:
        """argmax, except that F below f_min_probability gives way to the next most probable class."""
        labels = calibrated.argmax(axis=1) if calibrated.size else np.zeros(0, dtype=np.int64)
        if self.f_min_probability is not None and calibrated.size:
            weak_f = (labels == F_INDEX) & (calibrated[:, F_INDEX] < self.f_min_probability)
            if weak_f.any():
                others = calibrated[weak_f].copy()
                others[:, F_INDEX] = -1.0
                labels[weak_f] = others.argmax(axis=1)
        return labels

    def __call__(self, probabilities: np.ndarray) -> Decided:
        calibrated = self.calibrated(probabilities)
        labels = self.labels(calibrated)
        confidence = calibrated[np.arange(len(labels)), labels] if len(labels) else np.zeros(0)
        review = None if self.review_below is None else confidence < self.review_below
        return Decided(calibrated, labels, confidence, review)

    def as_dict(self) -> dict:
        return {"temperature": self.temperature, "f_min_probability": self.f_min_probability,
                "review_below": self.review_below}
