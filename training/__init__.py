"""Offline training of the ODE-Net and ResNet beat classifiers from raw MIT-BIH records."""
