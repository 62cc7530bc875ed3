"""The compiled ODE solve against torchdiffeq, the reference: same steps, same answers, per beat."""

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")  # the training extra (pyproject.toml): torch is the reference here

from service.models.artefacts import ENCODER_ONNX, load_model
from service.models.fastode import CompiledODE, failure
from service.models.fastode.rk_adaptive import SOLVED, STEP_LIMIT
from service.models.networks import SolverConfig, SolverStepLimitError
from service.models.predictors import ODEPredictor, OnnxGraph

from conftest import MODELS


@pytest.fixture(scope="module")
def odenet():
    model, _ = load_model(MODELS / "odenet")
    return model


@pytest.fixture(scope="module")
def states(odenet, fixture_beats):
    """Encoder outputs of 120 real beats (N, S, V, F of records 100, 208, 232)."""
    pick = np.linspace(0, len(fixture_beats) - 1, 120).astype(int)
    with torch.no_grad():
        return odenet.encoder(torch.from_numpy(fixture_beats.beats[pick])).numpy()


@pytest.fixture(scope="module")
def compiled(odenet):
    linear = odenet.body.dynamics.layer.linear
    return CompiledODE(linear.weight.detach().numpy(), linear.bias.detach().numpy())


def torchdiffeq_per_beat(odenet, states, solver):
    """torchdiffeq on each beat alone, in float64: its final state and NFE."""
    body = copy.deepcopy(odenet.body).double()
    out, nfe = [], []
    with torch.no_grad():
        for row in states:
            out.append(body(torch.from_numpy(row[None]).double(), solver).numpy()[0])
            nfe.append(body.nfe)
    return np.array(out), np.array(nfe)


@pytest.mark.parametrize("method,tol,step", [
    ("dopri5", 1e-1, None), ("dopri5", 1e-3, None), ("dopri5", 1e-6, None), ("bosh3", 1e-4, None),
    ("fehlberg2", 1e-3, None), ("adaptive_heun", 1e-3, None), ("dopri8", 1e-3, None),
    ("euler", 1e-3, 0.1), ("midpoint", 1e-3, 0.3), ("rk4", 1e-3, 0.25),
])
def test_each_beat_takes_torchdiffeqs_steps(odenet, states, compiled, method, tol, step):
    solver = SolverConfig(method=method, rtol=tol, atol=tol, step_size=step)
    expected, expected_nfe = torchdiffeq_per_beat(odenet, states, solver)
    out, nfe, status = compiled.solve(states, solver)
    assert np.all(status == SOLVED)
    assert np.array_equal(nfe, expected_nfe)
    assert np.abs(out - expected).max() < 1e-5 * max(1.0, np.abs(expected).max())


def test_a_beats_answer_is_the_same_bits_alone_or_in_any_batch(states, compiled):
    solver = SolverConfig(rtol=1e-4, atol=1e-4)
    together, nfe_together, _ = compiled.solve(states, solver)
    for i in (0, 57, 119):
        alone, nfe_alone, _ = compiled.solve(states[i:i + 1], solver)
        assert np.array_equal(alone[0], together[i]) and nfe_alone[0] == nfe_together[i]
    shuffled = np.random.default_rng(0).permutation(len(states))
    again, _, _ = compiled.solve(states[shuffled], solver)
    assert np.array_equal(again, together[shuffled])


def test_an_exhausted_step_budget_fails_only_its_beat(states, compiled):
    solver = SolverConfig(rtol=1e-6, atol=1e-6, max_num_steps=12)
    _, nfe, status = compiled.solve(states, solver)
    assert np.any(status == STEP_LIMIT) and np.any(status == SOLVED)
    assert np.all(nfe[status == STEP_LIMIT] == 2 + 6 * 12)
    with pytest.raises(SolverStepLimitError, match="more than 12 steps"):
        raise failure(status, solver)
    assert failure(status[status == SOLVED], solver) is None


def test_served_probabilities_equal_torchdiffeqs(odenet, fixture_beats):
    """The whole served path (onnxruntime encoder, compiled body, numpy head) against the torch
    network with torchdiffeq solving each beat alone in float64."""
    from service.models.artefacts import load_served

    encoder = OnnxGraph(MODELS / "odenet" / ENCODER_ONNX)
    predictor = ODEPredictor(odenet, encoder)
    beats = fixture_beats.beats[::10][:60]
    solver = SolverConfig(rtol=1e-3, atol=1e-3)
    served = predictor.predict(beats, solver)
    # The service builds it from the safetensors file's numpy arrays, without torch: the same bits.
    lean = ODEPredictor(load_served(MODELS / "odenet").weights, encoder).predict(beats, solver)
    assert np.array_equal(lean.probabilities, served.probabilities) and np.array_equal(lean.nfe, served.nfe)
    body, head = copy.deepcopy(odenet.body).double(), copy.deepcopy(odenet.head).double()
    expected, expected_nfe = [], []
    with torch.no_grad():
        for beat in beats:
            h = body(odenet.encoder(torch.from_numpy(beat[None])).double(), solver)
            expected.append(torch.softmax(head(h), dim=1).numpy()[0])
            expected_nfe.append(body.nfe)
    assert np.abs(served.probabilities - np.array(expected)).max() < 1e-5
    assert np.array_equal(served.nfe, expected_nfe)


@pytest.mark.parametrize("method", ["dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun"])
def test_the_served_tableaus_are_torchdiffeqs_bit_for_bit(method):
    """The compiled solver reads float64 literals so it serves without torch; they must be
    exactly torchdiffeq's tensors, or its steps would drift from the reference."""
    from torchdiffeq._impl import adaptive_heun, bosh3, dopri5, dopri8, fehlberg2

    from service.models.fastode.tableaus import TABLEAUS

    solver = {"dopri5": dopri5.Dopri5Solver, "dopri8": dopri8.Dopri8Solver, "bosh3": bosh3.Bosh3Solver,
              "fehlberg2": fehlberg2.Fehlberg2, "adaptive_heun": adaptive_heun.AdaptiveHeunSolver}[method]
    ours, theirs = TABLEAUS[method], solver.tableau
    assert np.array_equal(ours.alpha, theirs.alpha.numpy())
    for i, row in enumerate(theirs.beta):
        assert np.array_equal(ours.beta[i, :len(row)], row.numpy()) and not ours.beta[i, len(row):].any()
    assert np.array_equal(ours.c_sol, theirs.c_sol.numpy())
    assert np.array_equal(ours.c_error, theirs.c_error.numpy())
    assert np.array_equal(ours.mid, solver.mid.numpy())
    assert ours.order == solver.order
