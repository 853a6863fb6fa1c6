"""The batch scoring job: a file of texts in, the same rows with predictions out.

``batch.score`` is the stage (``ScoreConfig`` -> ``score``; ``MergeConfig`` -> ``merge_shards``),
``batch.io`` the streaming readers and writers, ``batch.workdir`` the resumable work directory,
``batch.client`` the HTTP mode against a running service. It scores on the serving engine
(``engine.engine``) and imports only ``core`` and ``service``: it runs inside the Bento, where
torch, train/ and export/ are absent.
"""
