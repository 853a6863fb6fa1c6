"""Export: checkpoint in, checked ONNX model bundle in the BentoML store out."""
