"""The classifiers: network definitions, compiled ODE solves, predictors, artefacts and registry."""
