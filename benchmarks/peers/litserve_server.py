"""A LitServe server: the ONNX graph in onnxruntime, batched. Usage: python litserve_server.py MODEL.onnx PORT"""

import sys

import litserve as ls
import numpy as np
import onnxruntime as ort


class OnnxClassifier(ls.LitAPI):
    def setup(self, device):
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.session = ort.InferenceSession(sys.argv[1], options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def decode_request(self, request):
        return np.asarray(request["beats"], dtype=np.float32)

    def batch(self, inputs):
        return np.concatenate(inputs)

    def predict(self, beats):
        logits = self.session.run(None, {self.input: beats})[0]
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        return exp / exp.sum(axis=1, keepdims=True)

    def unbatch(self, output):
        return list(output)

    def encode_response(self, output):
        return {"probabilities": np.atleast_2d(output).tolist()}


if __name__ == "__main__":
    api = OnnxClassifier(max_batch_size=64, batch_timeout=0.001)
    ls.LitServer(api, accelerator="cpu", workers_per_device=1).run(port=int(sys.argv[2]), generate_client_file=False)
