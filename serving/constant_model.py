"""A bare ``kserve.Model`` answering a constant forecast: the floor ``make bench-serving`` compares against.

``python -m serving.constant_model`` serves model ``cityscale`` on ``HTTP_PORT``/``GRPC_PORT`` with the same
V2 contract shape as the real predictor (``p10``/``p50``/``p90`` FP32 [N, 24], ``target_time`` BYTES [N, 24])
but no validation, features or model: what is left is kserve's own request/response cost. Benchmarking
both in the same run says how much the CityScale path adds on top of the framework.
"""

from __future__ import annotations

import numpy as np
from kserve import InferOutput, InferRequest, InferResponse, Model

HORIZON = 24


class ConstantModel(Model):
    def __init__(self, name: str = "cityscale"):
        super().__init__(name)
        self.ready = True

    async def predict(
        self,
        payload: InferRequest,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> InferResponse:
        n = int(payload.inputs[0].shape[0]) if payload.inputs else 1
        binary = payload.from_grpc or payload.use_binary_outputs
        outputs = []
        for name in ("p10", "p50", "p90"):
            out = InferOutput(name=name, shape=[n, HORIZON], datatype="FP32")
            out.set_data_from_numpy(np.full((n, HORIZON), 100.0, dtype=np.float32), binary_data=binary)
            outputs.append(out)
        times = InferOutput(name="target_time", shape=[n, HORIZON], datatype="BYTES")
        times.set_data_from_numpy(np.full((n, HORIZON), "2022-10-01T00:00:00", dtype=object), binary_data=binary)
        outputs.append(times)
        return InferResponse(
            response_id=payload.id or "",
            model_name=self.name,
            model_version="constant",
            infer_outputs=outputs,
            from_grpc=payload.from_grpc,
            use_binary_outputs=binary,
        )


def main() -> None:
    from cityscale.config import get_settings
    from serving import server

    settings = get_settings()
    server.start([ConstantModel(settings.model_name)], settings.http_port, settings.grpc_port)


if __name__ == "__main__":
    main()
