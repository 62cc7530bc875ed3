"""A KServe Python model server: the ONNX graph in onnxruntime behind the V2 (OIP) REST API.
Usage: python kserve_server.py MODEL.onnx PORT"""

import sys
import uuid

import kserve
import numpy as np
import onnxruntime as ort
from kserve import InferOutput, InferRequest, InferResponse


class OnnxClassifier(kserve.Model):
    def __init__(self, name: str, path: str):
        super().__init__(name)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.ready = True

    def predict(self, payload: InferRequest, headers=None) -> InferResponse:
        beats = payload.inputs[0].as_numpy().astype(np.float32)
        logits = self.session.run(None, {self.input: beats})[0]
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        probabilities = (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)
        output = InferOutput(name="probabilities", shape=list(probabilities.shape), datatype="FP32",
                             data=probabilities)
        return InferResponse(model_name=self.name, infer_outputs=[output], response_id=payload.id or str(uuid.uuid4()))


if __name__ == "__main__":
    kserve.ModelServer(http_port=int(sys.argv[2]), grpc_port=int(sys.argv[2]) + 1, workers=1).start(
        [OnnxClassifier("resnet", sys.argv[1])])
