"""From a network's probabilities to what a clinician reads: calibrated probabilities, a label, its
confidence and a review flag.

A network trained against class imbalance is over- or under-confident on patients it never saw, so
its raw top probability says little about how often it is right. A model's card may carry a
`decision` chosen by patient-grouped cross-validation inside its training records
(training.calibration, `ecg-crossval --calibrate`):

- `temperature` T: probabilities become softmax(log p / T) (temperature scaling, Guo et al. 2017,
  "On calibration of modern neural networks"), fitted to the pooled held-out beats' log-likelihood;
- `min_probability`: an ectopic class (S, V or F) is called only at or above its calibrated
  probability here, else the beat takes its most probable class that passes (N and Q always pass).
  Each false ectopic call is a false alarm on a patient's report, and F is learnt from very few
  patients; the thresholds are the cross-validated decision of how many false calls per 100 normal
  beats the model may make (training.calibration). Cards written before S and V had thresholds
  carry `f_min_probability` alone, read as the F threshold;
- `s_max_irregularity`: S is not called where the rhythm is irregular, i.e. where the beat's
  irregularity RR feature (mean absolute log ratio of the last 10 successive RR intervals,
  service.signal.context) is above this. In atrial fibrillation every RR interval differs and AAMI
  labels the beats N, never S; a network that reads each beat's prematurity calls many of them S.
  Frequent isolated atrial ectopy raises the irregularity too, which is what the threshold costs;
- `s_as_n_in_af`: where the strip's RR intervals meet the criteria of atrial fibrillation
  (service.signal.rhythm: the 128 intervals ending at the beat look random, Dash et al. 2009), S's
  probability is given to N. AAMI labels the beats of atrial fibrillation N, and most false S calls
  on unseen patients are such beats. It needs the strip's beat times, so it applies on the strip
  endpoints (and wherever `af_criteria` is passed), not to single context beats sent to /predict;
- `review_below`: a beat whose label's calibrated probability (its `confidence`) is below this is
  flagged for review, the threshold at which about 95 % of held-out beats were labelled automatically,
  as Holter technicians work: the machine labels what it is sure of, a person reviews the rest.

A card without a `decision` keeps the network's probabilities and argmax labels, with no review flag.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from service.signal.beats import CLASSES
from service.signal.context import irregularity_of

THRESHOLDED = ("S", "V", "F")  # the classes a minimum probability may hold back
N_INDEX, S_INDEX = CLASSES.index("N"), CLASSES.index("S")


@dataclass(frozen=True)
class Decided:
    probabilities: np.ndarray  # (n, classes), calibrated
    labels: np.ndarray  # (n,) class indices
    confidence: np.ndarray  # (n,) calibrated probability of each beat's label
    review: np.ndarray | None  # (n,) bool; None where the model has no review threshold


@dataclass(frozen=True)
class Decision:
    temperature: float = 1.0
    min_probability: dict[str, float] = field(default_factory=dict)  # class name -> calibrated threshold
    review_below: float | None = None
    s_max_irregularity: float | None = None
    s_as_n_in_af: bool = False

    def __post_init__(self):
        unknown = set(self.min_probability) - set(THRESHOLDED)
        if unknown:
            raise ValueError(f"min_probability may hold back {', '.join(THRESHOLDED)} only, not {sorted(unknown)}")
        # None means no threshold: drop it, so equal decisions compare and print equal
        object.__setattr__(self, "min_probability", {c: float(self.min_probability[c]) for c in THRESHOLDED
                                                     if self.min_probability.get(c) is not None})

    @classmethod
    def of_card(cls, card: dict) -> "Decision":
        return cls.of_dict(card.get("decision") or {})

    @classmethod
    def of_dict(cls, rule: dict) -> "Decision":
        """A decision as a card stores it (as_dict), or as cards stored it with an F threshold alone."""
        thresholds = rule.get("min_probability")
        if thresholds is None:
            thresholds = {"F": rule.get("f_min_probability")}
        return cls(float(rule.get("temperature", 1.0)), dict(thresholds), rule.get("review_below"),
                   rule.get("s_max_irregularity"), bool(rule.get("s_as_n_in_af", False)))

    def calibrated(self, probabilities: np.ndarray) -> np.ndarray:
        """softmax(log p / T) of each row; the rows unchanged when T is 1."""
        probabilities = np.asarray(probabilities, dtype=np.float64)
        if self.temperature == 1.0 or probabilities.size == 0:
            return probabilities
        logits = np.log(np.clip(probabilities, 1e-30, 1.0)) / self.temperature
        logits -= logits.max(axis=1, keepdims=True)
        scaled = np.exp(logits)
        return scaled / scaled.sum(axis=1, keepdims=True)

    def in_af(self, calibrated: np.ndarray, af_criteria: np.ndarray | None) -> np.ndarray:
        """The calibrated rows with S's probability given to N on the beats `af_criteria` flags
        (service.signal.rhythm), where this decision says so; the rows unchanged otherwise."""
        if not self.s_as_n_in_af or af_criteria is None or not calibrated.size:
            return calibrated
        flagged = np.asarray(af_criteria, dtype=bool)
        if flagged.shape != (len(calibrated),):
            raise ValueError(f"af_criteria has {flagged.size} flags for {len(calibrated)} beats")
        merged = calibrated.copy()
        merged[flagged, N_INDEX] += merged[flagged, S_INDEX]
        merged[flagged, S_INDEX] = 0.0
        return merged

    def labels(self, calibrated: np.ndarray, irregularity: np.ndarray | None = None) -> np.ndarray:
        """argmax over the classes that pass: an ectopic class below its minimum probability, and
        S in an irregular rhythm, give way to the most probable class that passes (N and Q always
        pass)."""
        if not calibrated.size:
            return np.zeros(0, dtype=np.int64)
        gated = self.s_max_irregularity is not None
        if gated and irregularity is None:
            raise ValueError("this decision holds S back in irregular rhythm: it needs context beats (RR features)")
        if not self.min_probability and not gated:
            return calibrated.argmax(axis=1)
        passing = calibrated.copy()
        for name, threshold in self.min_probability.items():
            k = CLASSES.index(name)
            passing[passing[:, k] < threshold, k] = -1.0
        if gated:
            passing[np.asarray(irregularity) > self.s_max_irregularity, S_INDEX] = -1.0
        return passing.argmax(axis=1)

    def __call__(self, probabilities: np.ndarray, inputs: np.ndarray | None = None,
                 irregularity: np.ndarray | None = None, af_criteria: np.ndarray | None = None) -> Decided:
        """The decision on the beats whose network inputs are `inputs`, or whose irregularity is
        given (the rhythm gate reads it); `af_criteria`, each beat's flag from the strip's beat
        times (service.signal.rhythm), where the strip is known."""
        calibrated = self.in_af(self.calibrated(probabilities), af_criteria)
        if self.s_max_irregularity is not None and irregularity is None and inputs is not None:
            irregularity = irregularity_of(inputs)
        labels = self.labels(calibrated, irregularity)
        confidence = calibrated[np.arange(len(labels)), labels] if len(labels) else np.zeros(0)
        review = None if self.review_below is None else confidence < self.review_below
        return Decided(calibrated, labels, confidence, review)

    def as_dict(self) -> dict:
        return {"temperature": self.temperature, "min_probability": dict(self.min_probability),
                "s_max_irregularity": self.s_max_irregularity, "s_as_n_in_af": self.s_as_n_in_af,
                "review_below": self.review_below}
