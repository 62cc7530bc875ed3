"""Which shipped model to pick for what: the one line GET /models gives beside each card.

The shipped artefacts serve different ends: two are the ones to use on patients the models never
saw (the context models, trained on every non-paced record), the `-ds1` ones back the published
inter-patient figures, the 187-sample and `reference-` ones the comparison with the reference
project. A model folder not named here (one you trained yourself) gets no recommendation.
"""

from __future__ import annotations

# name -> (recommended, what it is for)
USES: dict[str, tuple[bool, str]] = {
    "context-odenet": (True, "the default for strips, WFDB records, FHIR Observations and context beats"),
    "context-resnet": (True, "the same input without an ODE solve: the fastest; on unseen patients "
                             "higher N Se, a third of the false ectopic calls, lower S Se"),
    "context-odenet-ds1": (False, "trained on DS1 only: reproduces the inter-patient figures on DS2"),
    "context-resnet-ds1": (False, "trained on DS1 only: reproduces the inter-patient figures on DS2"),
    "odenet": (False, "187-sample beats (the public heartbeat CSV format); recognises patients it has "
                      "seen, fails on S and F for new ones"),
    "resnet": (False, "ResNet counterpart of odenet, for the ODE-Net/ResNet comparison"),
    "odenet-ds1": (False, "odenet's recipe trained on DS1 only: its inter-patient figures"),
    "resnet-ds1": (False, "resnet's recipe trained on DS1 only: its inter-patient figures"),
    "reference-odenet": (False, "the reference project's architecture and recipe, for comparison"),
    "reference-resnet": (False, "the reference project's architecture and recipe, for comparison"),
    "reference-odenet-ds1": (False, "the reference recipe trained on DS1 only: its inter-patient figures"),
    "reference-resnet-ds1": (False, "the reference recipe trained on DS1 only: its inter-patient figures"),
}


def model_use(name: str) -> dict:
    """{"recommended": bool, "use": str | None} for a model folder's name."""
    recommended, use = USES.get(name, (False, None))
    return {"recommended": recommended, "use": use}
