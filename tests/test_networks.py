"""ODE-Net solves: NFE counted exactly, per-beat error norm, bounded step budget."""

import pytest

torch = pytest.importorskip("torch")  # the training extra (pyproject.toml): torch is the reference here

from service.models.networks import (
    Architecture, BeatClassifier, SolverConfig, SolverStepLimitError, per_beat_rms_norm,
)


@pytest.fixture
def odenet():
    torch.manual_seed(0)
    return BeatClassifier(Architecture(body="odenet")).eval()


def test_dopri5_nfe_is_two_plus_six_per_step(odenet):
    with torch.no_grad():
        for tol in (1e-2, 1e-5):
            odenet(torch.rand(4, 187), SolverConfig(rtol=tol, atol=tol))
            assert odenet.body.nfe >= 8 and (odenet.body.nfe - 2) % 6 == 0


def test_nfe_grows_as_tolerance_tightens(odenet):
    beats = torch.rand(8, 187)
    nfe = []
    with torch.no_grad():
        for tol in (1e-1, 1e-3, 1e-6):
            odenet(beats, SolverConfig(rtol=tol, atol=tol))
            nfe.append(odenet.body.nfe)
    assert nfe == sorted(nfe) and nfe[-1] > nfe[0]


def test_per_beat_norm_is_the_worst_beats_rms():
    error = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    assert per_beat_rms_norm(error).item() == pytest.approx((12.5) ** 0.5)


def test_a_beats_answer_does_not_depend_on_its_batch(odenet):
    torch.manual_seed(1)
    batch = torch.rand(64, 187)
    solver = SolverConfig(rtol=1e-3, atol=1e-3)
    with torch.no_grad():
        alone = torch.softmax(odenet(batch[:1], solver), dim=1)
        together = torch.softmax(odenet(batch, solver), dim=1)[:1]
    assert torch.allclose(alone, together, atol=10 * solver.rtol)


def test_exhausted_step_budget_is_a_clear_error(odenet):
    with torch.no_grad(), pytest.raises(SolverStepLimitError, match="more than 2 steps"):
        odenet(torch.rand(2, 187), SolverConfig(rtol=1e-9, atol=1e-9, max_num_steps=2))


def test_fixed_step_solver_uses_its_step_size(odenet):
    with torch.no_grad():
        odenet(torch.rand(2, 187), SolverConfig(method="rk4", step_size=0.25))
    assert odenet.body.nfe == 4 * 4
