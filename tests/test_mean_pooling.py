"""experiments/mean_pooling.py: the mean-pooling head reads only a text's own tokens, whatever the padding."""

import sys
from pathlib import Path

import pytest

# experiments/ is not installed with the package: import it from the checkout
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from experiments.mean_pooling import MeanPoolClassifier  # noqa: E402


@pytest.mark.parametrize("arch", ["bert", "roberta"])
def test_mean_pooling_ignores_padding(tiny_bases, arch):
    import torch
    from transformers import AutoTokenizer

    base = tiny_bases[arch]
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = MeanPoolClassifier(str(base), num_labels=3).eval()
    short = "a good film"
    with torch.inference_mode():
        alone = model(**tokenizer([short], return_tensors="pt")).logits
        batch = tokenizer([short, "a much longer text " * 8], padding=True, truncation=True,
                          max_length=32, return_tensors="pt")
        assert batch["attention_mask"][0].sum() < batch["attention_mask"].shape[1]  # padded
        padded = model(**batch).logits
        assert alone.shape == (1, 3)
        torch.testing.assert_close(padded[:1], alone, atol=1e-5, rtol=1e-5)
        labels = torch.tensor([0, 2])
        loss = model(**batch, labels=labels).loss
        torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(padded, labels))
