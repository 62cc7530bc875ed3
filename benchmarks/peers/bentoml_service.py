"""A BentoML service: the ONNX graph in onnxruntime, adaptive batching.
Usage: ONNX_MODEL=MODEL.onnx bentoml serve bentoml_service:OnnxClassifier --port PORT"""

import os

import bentoml
import numpy as np
import onnxruntime as ort


@bentoml.service(workers=1)
class OnnxClassifier:
    def __init__(self):
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.session = ort.InferenceSession(os.environ["ONNX_MODEL"], options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    @bentoml.api(batchable=True, max_batch_size=64, max_latency_ms=1000)
    def predict(self, beats: np.ndarray) -> np.ndarray:
        logits = self.session.run(None, {self.input: beats.astype(np.float32)})[0]
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)
