"""Fine-tuning: labelled text in, Hugging Face checkpoint and evaluation report out."""
