"""The baseline the issue describes: a tutorial-style Flask app, for comparison in the same run.

What most tutorials write: the model loaded at import in each gunicorn worker, one torch thread
per worker, no limits, no logs, no metrics. `bench/run.py` serves it with
    cd bench && gunicorn -w 2 -b 127.0.0.1:PORT tutorial_app:app
and drives it with the same client and photos as the service. Not part of the product.
"""

from __future__ import annotations

import io
import os

import torch
import torchvision
from flask import Flask, Response, jsonify, request
from PIL import Image

torch.set_num_threads(1)
weights = torchvision.models.ResNet18_Weights.DEFAULT
model = torchvision.models.resnet18()
given = os.environ.get("MODEL_WEIGHTS")
model.load_state_dict(torch.load(given, weights_only=True) if given else weights.get_state_dict(progress=False))
model.eval()
preprocess = weights.transforms()
labels = weights.meta["categories"]

app = Flask(__name__)


@app.post("/classify")
def classify() -> Response:
    image = Image.open(io.BytesIO(request.files["image"].read())).convert("RGB")
    with torch.inference_mode():
        probabilities = model(preprocess(image).unsqueeze(0)).softmax(dim=1)[0]
    values, indices = probabilities.topk(5)
    return jsonify(predictions=[{"label": labels[i], "score": v} for v, i in zip(values.tolist(), indices.tolist(), strict=True)])
