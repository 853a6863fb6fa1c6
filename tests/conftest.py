"""Shared fixtures: tiny randomly initialised BERT and RoBERTa checkpoints, with tokenizers
trained offline on the demo texts, fine-tuned and exported once per test session.

The BentoML store of the session is a temporary directory: BENTOML_HOME is set here, before
anything imports bentoml, so no test touches the user's store.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

_STORE = Path(tempfile.mkdtemp(prefix="textcls-test-store-"))
os.environ["BENTOML_HOME"] = str(_STORE)
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tests never need a network; without these the hub clients wait for time-outs.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
MAX_LENGTH = 64
# Both tiny encoders: 2 layers, width 64. At width 32 the tiny RoBERTa's topic fine-tune stalled
# at two of four classes (dev accuracy about 0.5) for 5 of 40 random inits; at 64, 40 of 40 inits
# reached 0.95 or more (sentiment: 0.88 or more). The init is also seeded (INIT_SEED): without it
# the weights drew from whatever the global RNG held when the fixture ran.
TINY_DIMS = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)
INIT_SEED = 0


def _corpus() -> list[str]:
    from train.data import load_labelled
    from train.demo_data import demo_path

    return [t for task in ("sentiment", "topic") for t in load_labelled(demo_path(task, "train")).texts]


def _seeded_init(model_class, config):
    """A randomly initialised model that is the same whatever ran before in the process."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(INIT_SEED)
        return model_class(config)


def make_tiny_bert(path: Path, num_labels: int = 2) -> Path:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(_corpus(), trainers.WordPieceTrainer(vocab_size=800, special_tokens=specials))
    # The trainer learns the same tokens every run but numbers tied ones in a random order (a
    # Rust hash map); numbered in a fixed order, the same ids meet the same seeded embeddings.
    learnt = sorted(set(tok.get_vocab()) - set(specials))
    tok.model = models.WordPiece({t: i for i, t in enumerate([*specials, *learnt])}, unk_token="[UNK]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))],
    )
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                     cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
                                     model_max_length=MAX_LENGTH)
    config = BertConfig(vocab_size=tok.get_vocab_size(), max_position_embeddings=128,
                        num_labels=num_labels, pad_token_id=0, **TINY_DIMS)
    _seeded_init(BertForSequenceClassification, config).save_pretrained(path)
    hf_tok.save_pretrained(path)
    return path


def make_tiny_roberta(path: Path, num_labels: int = 2) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers, decoders
    from transformers import PreTrainedTokenizerFast, RobertaConfig, RobertaForSequenceClassification

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tok.train_from_iterator(_corpus(), trainers.BpeTrainer(vocab_size=800, special_tokens=specials,
                                                           initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.post_processor = processors.RobertaProcessing(sep=("</s>", 2), cls=("<s>", 0))
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                     unk_token="<unk>", pad_token="<pad>", cls_token="<s>",
                                     sep_token="</s>", mask_token="<mask>", model_max_length=MAX_LENGTH)
    config = RobertaConfig(vocab_size=tok.get_vocab_size(), max_position_embeddings=MAX_LENGTH + 2,
                           num_labels=num_labels, pad_token_id=1, bos_token_id=0, eos_token_id=2,
                           type_vocab_size=1, **TINY_DIMS)
    _seeded_init(RobertaForSequenceClassification, config).save_pretrained(path)
    hf_tok.save_pretrained(path)
    return path


BUILDERS = {"bert": make_tiny_bert, "roberta": make_tiny_roberta}
# The service's two tasks get one architecture each, so both run end to end.
TASK_ARCH = {"sentiment": "bert", "topic": "roberta"}


def demo_files(task: str) -> tuple[str, str]:
    from train.demo_data import demo_path

    return str(demo_path(task, "train")), str(demo_path(task, "dev"))


@pytest.fixture(scope="session")
def store_dir() -> Path:
    return _STORE


@pytest.fixture(scope="session")
def tiny_bases(tmp_path_factory) -> dict[str, Path]:
    """Untrained tiny encoders (random weights) with their tokenizers, by architecture."""
    root = tmp_path_factory.mktemp("bases")
    return {arch: build(root / arch) for arch, build in BUILDERS.items()}


@pytest.fixture(scope="session")
def tiny_checkpoints(tiny_bases, tmp_path_factory) -> dict[str, Path]:
    """`textcls train` on the demo data from each tiny base; keyed by task (see TASK_ARCH)."""
    from train.finetune import TrainConfig, train

    root = tmp_path_factory.mktemp("checkpoints")
    out = {}
    for task, arch in TASK_ARCH.items():
        data, dev = demo_files(task)
        train(TrainConfig(task=task, data=[data], eval_data=dev, output=root / task,
                          base_model=str(tiny_bases[arch]), max_length=MAX_LENGTH, epochs=20,
                          learning_rate=2e-3, batch_size=32, warmup_ratio=0.1, seed=0,
                          precision="fp32"))  # fp32 repeats exactly; bf16 does not
        out[task] = root / task
    return out


@pytest.fixture(scope="session")
def tiny_manifests(tiny_checkpoints, tmp_path_factory) -> dict[str, dict]:
    """Every variant of each tiny checkpoint exported, checked and saved to the session store."""
    from export.bundle_export import ExportConfig, export

    root = tmp_path_factory.mktemp("bundles")
    return {
        task: export(ExportConfig(checkpoint=ckpt, task=task, output=root / task,
                                  eval_data=demo_files(task)[1], max_accuracy_drop=2.0))
        for task, ckpt in tiny_checkpoints.items()
    }


@pytest.fixture(scope="session")
def tiny_bundles(tiny_manifests, tmp_path_factory) -> dict[str, Path]:
    """task -> bundle directory; the session's BentoML store (BENTOML_HOME) holds `sentiment`
    (tiny BERT) and `topic` (tiny RoBERTa)."""
    import bentoml

    return {task: Path(bentoml.models.get(m["store_tag"]).path) for task, m in tiny_manifests.items()}


@pytest.fixture
def keep_store(tiny_bundles):
    """Models a test stores are deleted after it, so `sentiment:latest` and `topic:latest` (what the
    service serves by default) stay the session's tiny bundles for the tests that follow."""
    import bentoml

    before = {str(m.tag) for m in bentoml.models.list()}
    yield
    for model in bentoml.models.list():
        if str(model.tag) not in before:
            bentoml.models.delete(model.tag)
