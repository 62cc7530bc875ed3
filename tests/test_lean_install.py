"""The serving install without torch: a real `ecg-serve` in its own process, where importing torch or
torchdiffeq fails, loads every shipped artefact and answers every classification route with the
answers of the usual process.

torch is the training extra's (pyproject.toml); this test stands in for a venv without it by putting
a `sitecustomize` first on PYTHONPATH that refuses those imports and records each attempt, so an
import swallowed by a try/except still fails the test."""

import functools
import json
import os
import subprocess
import sys

import httpx
import numpy as np
import pytest

from conftest import FIXTURES, MODELS, ROOT, served
from service.signal.beats import CLASSES

BLOCKER = '''
import os, sys

class RefuseTorch:
    """Imports of torch and torchdiffeq fail, as where they are not installed; each try is recorded."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchdiffeq"):
            with open(os.environ["ECG_TEST_TORCH_TRIES"], "a") as tries:
                tries.write(name + "\\n")
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, RefuseTorch())
'''
SHIPPED = sorted(p.parent.name for p in MODELS.glob("*/card.json"))
EXAMPLE = json.loads((ROOT / "examples" / "request.json").read_text())


@pytest.fixture(scope="module")
def no_torch_env(tmp_path_factory):
    folder = tmp_path_factory.mktemp("no-torch")
    (folder / "sitecustomize.py").write_text(BLOCKER)
    tries = folder / "torch-imports.txt"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), str(ROOT)]),
           "ECG_TEST_TORCH_TRIES": str(tries)}
    return env, tries


@pytest.fixture(scope="module")
def lean_server(no_torch_env):
    """`ecg-serve` with torch unimportable; yields its base URL; afterwards, no torch import was tried."""
    env, tries = no_torch_env
    with served(env=env, ready_s=180) as (base, _):
        yield base
    assert not tries.exists(), f"the service tried to import {tries.read_text().split()}"


def test_the_blocker_makes_torch_unimportable(no_torch_env, tmp_path):
    env, _ = no_torch_env
    tries = tmp_path / "tries.txt"
    result = subprocess.run([sys.executable, "-c", "import torch"], env={**env, "ECG_TEST_TORCH_TRIES": str(tries)},
                            capture_output=True, text=True)
    assert result.returncode != 0 and "No module named 'torch'" in result.stderr
    assert tries.read_text().split() == ["torch"]


def test_every_shipped_model_is_served_without_torch(lean_server):
    ready = httpx.get(f"{lean_server}/readyz", timeout=10)
    assert ready.status_code == 200
    served = sorted(httpx.get(f"{lean_server}/models", timeout=10).json()["models"])
    assert served == SHIPPED and len(SHIPPED) >= 12


@functools.cache
def registry():
    from service.models.registry import ModelRegistry

    return ModelRegistry.load(MODELS)


def registry_answer(name: str, beats: np.ndarray) -> np.ndarray:
    """The same model's probabilities in this (torch-importable) process: the answer to match."""
    return registry().models[name].predictor.predict(beats).probabilities


@pytest.mark.parametrize("name", [n for n in SHIPPED if not n.startswith("context-")])
def test_predict_and_infer_answer_as_with_torch_installed(lean_server, name):
    beats = np.array(EXAMPLE["beats"], dtype=np.float32)
    expected = registry_answer(name, beats)
    answer = httpx.post(f"{lean_server}/predict", json={"model": name, "beats": EXAMPLE["beats"]}, timeout=60)
    assert answer.status_code == 200, answer.text
    predictions = answer.json()["predictions"]
    got = np.array([list(p["probabilities"].values()) for p in predictions])
    assert np.allclose(got, expected, atol=1e-6)
    assert [p["label"] for p in predictions] == [CLASSES[i] for i in expected.argmax(axis=1)]

    infer = httpx.post(f"{lean_server}/v2/models/{name}/infer", timeout=60, json={"inputs": [
        {"name": "beats", "shape": list(beats.shape), "datatype": "FP32", "data": beats.ravel().tolist()}]})
    assert infer.status_code == 200, infer.text
    output = next(o for o in infer.json()["outputs"] if o["name"] == "probabilities")
    assert np.allclose(np.reshape(output["data"], output["shape"]), expected, atol=1e-6)


@pytest.mark.parametrize("name", [n for n in SHIPPED if n.startswith("context-")])
def test_wfdb_uploads_are_classified_by_every_context_model(lean_server, name):
    files = {part: (f"208.{ext}", (FIXTURES / f"208.{ext}").read_bytes()) for part, ext in (("header", "hea"), ("signal", "dat"))}
    answer = httpx.post(f"{lean_server}/predict/wfdb", params={"model": name}, files=files, timeout=120)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["model"] == name and body["summary"]["n_beats"] > 150 and body["summary"]["counts"]["V"] > 30


def test_strip_and_fhir_routes_answer_without_torch(lean_server):
    strip = httpx.post(f"{lean_server}/predict/strip", content=(ROOT / "examples" / "strip.json").read_bytes(),
                       headers={"content-type": "application/json"}, timeout=120)
    fhir = httpx.post(f"{lean_server}/predict/fhir", content=(ROOT / "examples" / "observation.json").read_bytes(),
                      headers={"content-type": "application/fhir+json"}, timeout=120)
    for answer in (strip, fhir):
        assert answer.status_code == 200, answer.text
        assert answer.json()["summary"]["n_beats"] > 10


def test_bad_input_is_still_a_422_naming_the_field(lean_server):
    answer = httpx.post(f"{lean_server}/predict", json={"model": "odenet", "beats": [[0.1] * 10]}, timeout=30)
    assert answer.status_code == 422 and "beats" in answer.text


def test_every_service_module_but_the_torch_networks_imports_without_torch(no_torch_env, tmp_path):
    """Not only what the app imports: ecg-classify, the report and every other module load without torch;
    service.models.networks (the nn.Modules, for training) is the one that needs it."""
    env, _ = no_torch_env
    tries = tmp_path / "tries.txt"
    script = ("import importlib, pkgutil, service\n"
              "names = [m.name for m in pkgutil.walk_packages(service.__path__, 'service.')]\n"
              "assert 'service.models.networks' in names\n"
              "for name in names:\n"
              "    if name != 'service.models.networks':\n"
              "        importlib.import_module(name)\n"
              "print(len(names))\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env={**env, "ECG_TEST_TORCH_TRIES": str(tries)},
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) > 30 and not tries.exists(), tries.read_text() if tries.exists() else ""
