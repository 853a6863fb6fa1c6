"""The first server a user writes: FastAPI + uvicorn + a transformers pipeline on PyTorch.

One forward per request (no batching across requests: the request's texts, padded to the longest,
are one forward); a plain `def` handler, which FastAPI runs
in its thread pool (40 threads by default), so concurrent requests run the model at once, each on
PyTorch's intra-op pool. Run: `uvicorn server:app --app-dir bench/peers/naive` with PEER_CHECKPOINT
set (bench/peers/__init__.py:NaivePeer builds the command).
"""

import os

import torch
from fastapi import FastAPI
from pydantic import BaseModel
from transformers import pipeline

# Non-default: 2 intra-op threads (the machine's cores), as every peer; OMP_NUM_THREADS=2 in the
# environment says the same to OpenMP.
torch.set_num_threads(int(os.environ.get("PEER_THREADS", "2")))
# Non-default: truncate to the bundle's max_length (128), as every peer that can; the pipeline
# does not truncate unless asked.
MAX_LENGTH = int(os.environ.get("PEER_MAX_LENGTH", "128"))

classifier = pipeline("text-classification", model=os.environ["PEER_CHECKPOINT"], device="cpu")
app = FastAPI()


class TextsRequest(BaseModel):
    texts: list[str]


@app.get("/healthz")
def healthz():
    return {"ok": True}


@app.post("/topic")
def topic(request: TextsRequest):
    # Non-default: batch_size=len(texts), one forward per request (the pipeline's default
    # batch_size 1 would run a request's texts one by one); as bentoml_pipeline, so the two differ
    # only in BentoML's batching across requests.
    out = classifier(request.texts, batch_size=max(1, len(request.texts)), truncation=True,
                     max_length=MAX_LENGTH)
    return [{"label": o["label"], "score": o["score"]} for o in out]
