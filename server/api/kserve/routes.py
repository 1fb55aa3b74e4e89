"""KServe Open Inference Protocol v2 (REST) for onnx models; health is in api.health."""
from __future__ import annotations


from modelyard.server.http.bodies import read_model
from modelyard.server.http.errors import ApiError, bad_request
from modelyard.server.inference.dispatch import Dispatcher
from modelyard.server.api.kserve.codec import InferBody, OipError, decode_inputs, encode_tensor


class ModelMetadata:
    def __init__(self, inference: Dispatcher):
        self.inference = inference

    def on_get(self, req, resp, model_id):
        loaded = self.inference.model(model_id, ("onnx",))
        engine = loaded.engine
        resp.media = {
            "name": model_id,
            "versions": [loaded.meta.get("version")] if loaded.meta.get("version") else [],
            "platform": "onnx_onnxv1",
            "inputs": [s.public() for s in engine.inputs],
            "outputs": [s.public() for s in engine.outputs],
        }


class ModelReady:
    """200 when the model is loaded (or loads now), as KServe's runtimes answer."""

    def __init__(self, inference: Dispatcher):
        self.inference = inference

    def on_get(self, req, resp, model_id):
        self.inference.model(model_id, ("onnx",))
        resp.media = {"name": model_id, "ready": True}


class Infer:
    def __init__(self, inference: Dispatcher, settings):
        self.inference = inference
        self.settings = settings

    def on_post(self, req, resp, model_id):
        body = read_model(req, InferBody, self.settings.max_body_size).model_dump(exclude_none=True)
        loaded = self.inference.model(model_id, ("onnx",))
        engine = loaded.engine
        try:
            feeds = decode_inputs(body, engine.inputs)
            names = self._outputs(body, engine)
        except OipError as exc:
            raise bad_request(str(exc)) from None
        try:
            results = engine.run(feeds, names)
        except Exception as exc:  # onnxruntime's own checks (e.g. a dimension it infers)
            raise ApiError(400, f"onnxruntime refused the inputs: {exc}") from None
        out = {"model_name": model_id, "outputs": [encode_tensor(n, a) for n, a in results.items()]}
        if loaded.meta.get("version"):
            out["model_version"] = loaded.meta["version"]
        if body.get("id") is not None:
            out["id"] = body["id"]
        resp.media = out

    @staticmethod
    def _outputs(body, engine) -> list[str] | None:
        wanted = body.get("outputs")
        if wanted is None:
            return None
        known = {o.name for o in engine.outputs}
        if not isinstance(wanted, list) or not all(isinstance(o, dict) and o.get("name") in known for o in wanted):
            raise OipError(f"'outputs' must name outputs of this model: {', '.join(sorted(known))}")
        return [o["name"] for o in wanted]

