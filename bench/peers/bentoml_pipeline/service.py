"""What a BentoML user writes first: a transformers pipeline on PyTorch behind an adaptive-batching
API. BentoML's defaults otherwise (one worker, its thread settings, timeouts).

Run: `bentoml serve service:PipelineClassifier --working-dir bench/peers/bentoml_pipeline` with
PEER_CHECKPOINT set (bench/peers/__init__.py:BentoMLPipelinePeer builds the command).
"""

import os

import bentoml

MAX_LENGTH = int(os.environ.get("PEER_MAX_LENGTH", "128"))


@bentoml.service
class PipelineClassifier:
    def __init__(self) -> None:
        import torch
        from transformers import pipeline

        # Non-default: 2 intra-op threads (the machine's cores), as every peer.
        torch.set_num_threads(int(os.environ.get("PEER_THREADS", "2")))
        self.pipe = pipeline("text-classification", model=os.environ["PEER_CHECKPOINT"],
                             device="cpu")

    # Batching settings: max_batch_size 64 texts (BentoML's default is 100), as textcls's default
    # TEXTCLS_MAX_BATCH_SIZE. max_latency_ms 10000 (BentoML's default is 60000): the dispatcher
    # answers 503 to requests it predicts would miss this bound, so it is set large enough that
    # the benchmark's loads are not shed, and the server is measured on latency, not refusals.
    @bentoml.api(batchable=True, max_batch_size=64, max_latency_ms=10000)
    def topic(self, texts: list[str]) -> list[dict]:
        # Non-default: batch_size=len(texts) so the batch BentoML assembled is one forward
        # (padded to its longest text); the pipeline's default batch_size 1 would run it text by
        # text. Truncation to the bundle's max_length (128), as every peer that can.
        out = self.pipe(texts, batch_size=len(texts), truncation=True, max_length=MAX_LENGTH)
        return [{"label": o["label"], "score": o["score"]} for o in out]
