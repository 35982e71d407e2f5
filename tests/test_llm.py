import logging
import re
import shutil

import pytest

from rqa.config import PRIMER_DIR, Settings
from rqa.errors import Cancelled, ModelError
from rqa.llm import FORMATS, ModelPool, chat_format, load_model, needs_reasoning, resolve_model, wait_for
from rqa.models import OFFLINE_MODELS, OfflineModel, offline_model_path
from rqa.types import GREEDY

TEST_MODEL = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def default_gguf():
    """The smallest instruction-tuned offline model: what the fast tests generate with."""
    return offline_model_path(TEST_MODEL)


def use_hf_cache(monkeypatch, cache):
    """huggingface_hub reads its settings at import, so patch its constants, not the environment."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))


def fake_hub_cache(monkeypatch, cache, gguf, commit="a" * 40):
    """A Hugging Face cache laid out as huggingface_hub writes it, holding someone/rqa-model."""
    repo = cache / "models--someone--rqa-model"
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    shutil.copy(gguf, snap / "model-q4_0.gguf")
    use_hf_cache(monkeypatch, cache)
    return snap


def test_missing_and_corrupt_model_files_fail_clearly(tmp_path):
    with pytest.raises(ModelError, match="model file not found"):
        resolve_model(Settings.load(model_path=str(tmp_path / "nope.gguf")))
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf at all" * 100)
    with pytest.raises(ModelError, match="not a GGUF"):
        resolve_model(Settings.load(model_path=str(bad)))
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(b"GGUF" + b"\x00" * 64)
    with pytest.raises(ModelError, match="cannot load model"):
        load_model(truncated, Settings())


def test_hub_unreachable_falls_back_to_offline_default(monkeypatch, tmp_path, caplog, default_gguf):
    use_hf_cache(monkeypatch, tmp_path / "empty-cache")
    with caplog.at_level(logging.WARNING, logger="rqa.llm"):
        files = resolve_model(Settings.load(hub_repo="someone/rqa-model", model=TEST_MODEL))
    assert files.source == f"offline:{TEST_MODEL}" and files.q4 == default_gguf
    assert "someone/rqa-model unavailable" in caplog.text


def test_hub_repo_resolves_from_local_hf_cache(monkeypatch, tmp_path, default_gguf):
    """The download side, against a local Hugging Face cache."""
    snap = fake_hub_cache(monkeypatch, tmp_path / "hub", default_gguf)
    files = resolve_model(Settings.load(hub_repo="someone/rqa-model"))
    assert files.source == "hub:someone/rqa-model"
    assert files.q4 == snap / "model-q4_0.gguf" and files.q8 is None


def test_turn_formats():
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}]
    assert chat_format({"general.architecture": "gemma3", "general.finetune": "it"}).name == "gemma"
    assert chat_format({"general.architecture": "qwen2", "general.finetune": "Instruct"}).name == "chatml"
    assert chat_format({"general.architecture": "gemma3"}).name == "plain"  # a base model
    assert chat_format({"general.architecture": "unknownarch", "general.finetune": "it"}).name == "plain"
    assert FORMATS["gemma"].render(msgs) == "<start_of_turn>user\nS\n\nQ<end_of_turn>\n<start_of_turn>model\n"
    assert FORMATS["chatml"].render(msgs).endswith("<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n")
    tmpl = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}<|im_start|>assistant\n"
    fmt = chat_format({"tokenizer.chat_template": tmpl, "general.architecture": "gemma3"})
    assert fmt.name == "gguf-template" and "<|im_end|>" in fmt.stop
    assert fmt.render(msgs) == FORMATS["chatml"].render(msgs).rstrip("\n")  # jinja drops the final newline


@pytest.mark.parametrize("question, reasoning", [
    ("Derive the gradient of the softmax cross-entropy loss.", True),
    ("Why is attention scaled by $\\sqrt{d_k}$?", True),
    ("How does LoRA reduce the number of trainable parameters, and why does it add no latency?", True),
    ("Explain why the variance of q·k grows with d_k.", True),
    ("How many attention heads does the Transformer base model use?", False),
    ("What dataset was BERT pre-trained on?", False),
    ("Which paper showcases retrieval for language models?", False),
    ("What is the label smoothing value?", False),
])
def test_reasoning_router(question, reasoning):
    assert needs_reasoning(question) is reasoning


def test_router_picks_q8_only_for_reasoning(default_gguf, tmp_path):
    q8 = tmp_path / "model-q8_0.gguf"
    shutil.copy(default_gguf, q8)
    pool = ModelPool(Settings.load(model_path=str(default_gguf), model_path_q8=str(q8)))
    assert pool.for_question("Derive the LoRA update equation step by step").path == q8
    assert pool.for_question("What learning rate did they use?").path == default_gguf
    assert len(pool._models) == 2


def test_instruction_tuned_model_answers_from_its_source_and_stops(default_gguf):
    """One real generation, through the GGUF's own chat template, with the app's prompt."""
    from rqa.prompt import build_messages
    from rqa.types import Chunk, Hit

    model = load_model(default_gguf, Settings.load(n_ctx=1024))
    assert model.fmt.name == "gguf-template" and "<|im_end|>" in model.fmt.stop
    source = (PRIMER_DIR / "01-attention.md").read_text()[:900]
    hits = [Hit(Chunk("c1", "01-attention", "Attention", "Scaled dot-product attention", 1, 1, 0, 900, source), 1.0)]
    messages = build_messages("Why are the dot products divided by sqrt(d_k)?", hits)
    text = "".join(model.stream(messages, max_tokens=80, sampling=GREEDY))
    assert text.strip() and "<|im_" not in text and "Question:" not in text  # stopped at its turn's end
    assert re.search(r"softmax|gradient|dot|scal|variance|large", text, re.I)  # on topic, not gibberish
    # its own turn continued from its own words, cut where a word begins: what it wrote the first time
    cut = text.index(" ", text.index(" ") + 1)
    continued = model.complete(messages, text[:cut], 2, [])
    assert continued.strip() and text[cut:].startswith(continued)


def test_offline_model_is_verified_and_assembled_atomically(tmp_path, monkeypatch):
    import sys

    for i, data in enumerate((b"GGUF-part-one|", b"part-two"), start=1):
        pkg = tmp_path / "site" / f"fake_model_part{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        (pkg / "data" / f"part0{i}.bin").write_bytes(data)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("RQA_MODEL_CACHE", str(tmp_path / "cache"))
    import hashlib

    whole = b"GGUF-part-one|part-two"
    good = OfflineModel("fake", "a fake", ("fake_model_part1", "fake_model_part2"), "data/part*.bin", len(whole),
                        hashlib.sha256(whole).hexdigest())
    monkeypatch.setitem(OFFLINE_MODELS, "fake", good)
    path = offline_model_path("fake", progress=False)
    assert path.read_bytes() == whole and path.parent == tmp_path / "cache"
    # a changed package: refused, and nothing that looks whole is left behind
    monkeypatch.setitem(OFFLINE_MODELS, "bad", OfflineModel("bad", "", good.packages, good.part_glob, len(whole), "0" * 64))
    with pytest.raises(ModelError, match="does not match the pinned"):
        offline_model_path("bad", progress=False)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["fake.gguf", "fake.verified"]
    monkeypatch.setitem(OFFLINE_MODELS, "gone", OfflineModel("gone", "", ("fake_model_part9",), "x", 1, "0" * 64))
    with pytest.raises(ModelError, match="package fake-model-part9 is not installed"):
        offline_model_path("gone", progress=False)
    with pytest.raises(ModelError, match="unknown offline model"):
        offline_model_path("nope")
    # the same model from pieces copied elsewhere (no packages there), verified the same way
    pieces = [tmp_path / "p00", tmp_path / "p01"]
    pieces[0].write_bytes(whole[:5]), pieces[1].write_bytes(whole[5:])
    monkeypatch.setenv("RQA_MODEL_CACHE", str(tmp_path / "elsewhere"))
    monkeypatch.setitem(OFFLINE_MODELS, "copied", OfflineModel("copied", "", ("fake_model_part9",), "x", len(whole),
                                                               good.sha256))
    assert offline_model_path("copied", progress=False, parts=pieces).read_bytes() == whole
    pieces[1].write_bytes(whole[5:-1] + b"X")
    monkeypatch.setitem(OFFLINE_MODELS, "copied2", OfflineModel("copied2", "", ("fake_model_part9",), "x", len(whole),
                                                                good.sha256))
    with pytest.raises(ModelError, match="does not match the pinned"):
        offline_model_path("copied2", progress=False, parts=pieces)
    sys.modules.pop("fake_model_part1", None), sys.modules.pop("fake_model_part2", None)


def test_hub_download_checks_sha256(monkeypatch, tmp_path, default_gguf):
    from types import SimpleNamespace

    from huggingface_hub import HfApi

    snap = fake_hub_cache(monkeypatch, tmp_path / "hub", default_gguf)
    from rqa.text import sha256_file

    digest = {"value": "0" * 64}
    monkeypatch.setattr(HfApi, "get_paths_info", lambda self, repo, paths, repo_type=None: [
        SimpleNamespace(lfs=SimpleNamespace(sha256=digest["value"]))])
    with pytest.raises(ModelError, match="sha256 mismatch"):
        resolve_model(Settings.load(hub_repo="someone/rqa-model"))
    digest["value"] = sha256_file(snap / "model-q4_0.gguf")
    assert resolve_model(Settings.load(hub_repo="someone/rqa-model")).source == "hub:someone/rqa-model"


def write_gguf(path, kind):
    """A metadata-only GGUF of the given general.type: enough for the checks before llama.cpp."""
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), "llama")
    writer.add_type(kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_an_expander_named_as_the_file_that_answers_is_its_loaded_copy(default_gguf, tmp_path):
    """Named or not, the expander that is the answering file shares its one loaded copy, adapter
    and all (a second copy is 1.7 GB more for the default model); another file is its own."""
    def expander_and_answers(**settings):
        pool = ModelPool(Settings.load(**settings))
        pool._load = lambda *key: key  # what would be loaded, not loading it
        return pool.expander(), pool.get()

    default = "qwen2.5-coder-1.5b-instruct"
    unnamed, answers = expander_and_answers(model=default)
    assert unnamed == answers and answers[1] is not None  # the packaged adapter
    assert expander_and_answers(model=default, expand_with=default) == (answers, answers)
    assert expander_and_answers(model=default, expand_with=str(offline_model_path(default))) == (answers, answers)
    other = tmp_path / "other.gguf"
    shutil.copy(default_gguf, other)
    expander, answers = expander_and_answers(model=default, expand_with=str(other))
    assert expander == (other,) and answers[0] == offline_model_path(default)  # no adapter on another file


def test_packaged_adapter_is_applied_unless_none_and_a_changed_or_missing_one_is_refused(monkeypatch, tmp_path,
                                                                                        default_gguf):
    from rqa import models
    from rqa.text import sha256_file

    adapter = write_gguf(tmp_path / "rqa-test-lora.gguf", "adapter")
    pinned = models.PackagedAdapter(adapter.name, TEST_MODEL, adapter.stat().st_size, sha256_file(adapter))
    monkeypatch.setattr(models, "ADAPTER_DIR", tmp_path)
    monkeypatch.setattr(models, "ADAPTERS", {TEST_MODEL: pinned})
    assert resolve_model(Settings.load(model=TEST_MODEL)).adapter == adapter
    assert resolve_model(Settings.load(model=TEST_MODEL, adapter_scale=0.5)).adapter_scale == 0.5
    assert resolve_model(Settings.load(model=TEST_MODEL, adapter="none")).adapter is None
    assert resolve_model(Settings.load(model=TEST_MODEL, adapter="None")).adapter is None
    # an explicit model file is not the base the packaged adapter was trained on
    assert resolve_model(Settings.load(model_path=str(default_gguf))).adapter is None
    with adapter.open("ab") as f:  # one byte more
        f.write(b"\0")
    with pytest.raises(ModelError, match=r"^the fine-tune adapter rqa-test-lora.gguf was changed .*RQA_ADAPTER=none$"):
        resolve_model(Settings.load(model=TEST_MODEL))
    adapter.unlink()
    with pytest.raises(ModelError, match=r"^the fine-tune adapter rqa-test-lora.gguf for smollm2-135m-instruct is missing"):
        resolve_model(Settings.load(model=TEST_MODEL))
    assert resolve_model(Settings.load(model=TEST_MODEL, adapter="none")).adapter is None


def test_an_adapter_path_must_be_a_gguf_lora_adapter(tmp_path, default_gguf):
    with pytest.raises(ModelError, match="model file not found"):
        resolve_model(Settings.load(model=TEST_MODEL, adapter=str(tmp_path / "nope.gguf")))
    with pytest.raises(ModelError, match=r"^smollm2-135m-instruct.gguf is not a LoRA adapter \(its GGUF type is model\)"):
        resolve_model(Settings.load(model=TEST_MODEL, adapter=str(default_gguf)))
    lora = write_gguf(tmp_path / "lora.gguf", "adapter")
    assert resolve_model(Settings.load(model=TEST_MODEL, adapter=str(lora))).adapter == lora


def test_the_header_read_is_gguf_s_own_without_the_vocabulary(tmp_path, default_gguf):
    """rqa reads a model's header itself (gguf's reader takes 10 s over a 150,000-token vocabulary):
    every scalar and string field and every tensor shape as gguf reads them; a cut file refused."""
    from gguf import GGUFReader, GGUFValueType

    from rqa.gguf_header import read_header
    from rqa.llm import check_adapter

    header, reader = read_header(default_gguf), GGUFReader(default_gguf)
    assert header.fields == {k: f.contents() for k, f in reader.fields.items()
                             if not k.startswith("GGUF.") and f.types[0] != GGUFValueType.ARRAY}
    assert header.fields["general.architecture"] == "llama" and "{{" in header.fields["tokenizer.chat_template"]
    assert header.tensors == {t.name: tuple(int(n) for n in t.shape) for t in reader.tensors}
    assert header.types == {t.name: int(t.tensor_type) for t in reader.tensors} and len(set(header.types.values())) > 2
    assert len(header.tensors) > 100 and "tokenizer.ggml.tokens" not in header.fields
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(default_gguf.read_bytes()[:1_000_000])  # inside the vocabulary
    with pytest.raises(ValueError, match="ends inside its header"):
        read_header(cut)
    with pytest.raises(ModelError, match=r"^cannot read adapter cut.gguf: the file ends inside its header \(corrupt GGUF\?\)$"):
        check_adapter(cut)


def test_a_model_cut_inside_its_header_is_refused_in_one_line_on_either_engine(tmp_path, default_gguf):
    """A base whose header is cut (a partial copy) is named in one line before llama.cpp reads it:
    on llama-server, where rqa reads its turn format first, and in the adapter check."""
    from rqa.llm import check_adapter_fits

    cut = tmp_path / "cut.gguf"
    cut.write_bytes(default_gguf.read_bytes()[:500_000])  # inside the vocabulary
    with pytest.raises(ModelError, match=r"^cannot read model cut.gguf: the file ends inside its header \(corrupt GGUF\?\)$"):
        ModelPool(Settings.load(model_path=str(cut), adapter="none"), engine="server").get()
    with pytest.raises(ModelError, match=r"^cannot load model .*cut.gguf"):
        ModelPool(Settings.load(model_path=str(cut), adapter="none"), engine="in-process").get()
    lora = write_gguf(tmp_path / "lora.gguf", "adapter")
    with pytest.raises(ModelError, match=r"^cannot read model cut.gguf: the file ends inside its header"):
        check_adapter_fits(lora, cut)


@pytest.mark.parametrize("endian", ["LITTLE", "BIG"])
def test_the_header_read_takes_every_value_type_in_either_byte_order(tmp_path, endian):
    import numpy as np
    from gguf import GGUFEndian, GGUFReader, GGUFValueType, GGUFWriter

    from rqa.gguf_header import read_header

    path = tmp_path / "all.gguf"
    writer = GGUFWriter(str(path), "llama", endianess=GGUFEndian[endian])
    for n, kind in enumerate(t for t in GGUFValueType if t not in (GGUFValueType.STRING, GGUFValueType.ARRAY)):
        writer.add_key_value(f"k.{kind.name.lower()}", n + 1 if kind != GGUFValueType.BOOL else True, kind)
    writer.add_key_value("k.text", "héllo", GGUFValueType.STRING)
    writer.add_key_value("k.words", ["a", "bc", ""], GGUFValueType.ARRAY)
    writer.add_key_value("k.numbers", [1.5, 2.5], GGUFValueType.ARRAY)
    writer.add_key_value("k.after", "the arrays stepped over", GGUFValueType.STRING)
    writer.add_tensor("blk.0.attn_q.weight", np.zeros((3, 5), dtype=np.float32))
    writer.add_tensor("blk.0.bias", np.zeros(7, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    header, reader = read_header(path), GGUFReader(path)
    assert header.fields == {k: f.contents() for k, f in reader.fields.items()
                             if not k.startswith("GGUF.") and f.types[0] != GGUFValueType.ARRAY}
    assert header.fields["k.after"] == "the arrays stepped over" and header.fields["k.text"] == "héllo"
    assert len([k for k in header.fields if k.startswith("k.")]) == 13  # 11 scalar types and 2 strings
    assert header.tensors == {"blk.0.attn_q.weight": (5, 3), "blk.0.bias": (7,)}  # ne0 first
    assert header.types == {"blk.0.attn_q.weight": 0, "blk.0.bias": 0}  # F32


def test_a_hostile_header_is_refused_at_the_cost_of_its_size(tmp_path):
    """What llama.cpp refuses is refused in one ValueError, before any count in the file is trusted."""
    import struct

    from rqa.gguf_header import read_header

    def gguf(body: bytes, version: int = 3):
        path = tmp_path / f"bad{len(list(tmp_path.iterdir()))}.gguf"
        path.write_bytes(b"GGUF" + struct.pack("<I", version) + body)
        return path

    def counts(tensors, fields):
        return struct.pack("<QQ", tensors, fields)

    def text(s):
        return struct.pack("<Q", len(s)) + s.encode()

    key_array = counts(0, 1) + text("k") + struct.pack("<I", 9)  # one field, an array
    for reason, path in [
        ("ends inside its header", gguf(b"")),
        ("GGUF version 1", gguf(counts(0, 0), version=1)),
        ("ends inside its header", gguf(key_array + struct.pack("<IQ", 8, 2) + struct.pack("<Q", 2**64 - 1) + b"x" * 16)),
        ("ends inside its header", gguf(key_array + struct.pack("<IQ", 4, 2**63))),
        ("an array of GGUF value type 9", gguf(key_array + struct.pack("<IQ", 9, 1))),
        ("has 5 dimensions", gguf(counts(1, 0) + text("t") + struct.pack("<I5Q", 5, 1, 1, 1, 1, 1))),
        ("the key k is written twice", gguf(counts(0, 2) + (text("k") + struct.pack("<II", 4, 1)) * 2)),
    ]:
        with pytest.raises(ValueError, match=reason):
            read_header(path)


def test_the_scripted_fakes_keep_the_model_and_pool_protocols():
    """The tests' fakes stand in for Model and ModelPool: they must keep the methods the answer path
    calls, with the same parameters, or the fast tests would test something else."""
    import inspect

    from rqa.llm import ChatModel, Model, Models
    from rqa.remote import RemoteModel
    from tests.conftest import ScriptedModel, ScriptedPool
    from tests.test_http import SlowModel

    def same_methods(cls, protocol):
        for name, member in vars(protocol).items():
            if callable(member) and not name.startswith("_"):
                assert list(inspect.signature(getattr(cls, name)).parameters) == \
                    list(inspect.signature(member).parameters), f"{cls.__name__}.{name}"

    for cls in (Model, RemoteModel, ScriptedModel, SlowModel):
        same_methods(cls, ChatModel)
    for cls in (ModelPool, ScriptedPool):
        same_methods(cls, Models)
    pool = ScriptedPool(ScriptedModel("x"))
    assert isinstance(pool, Models) and isinstance(pool.get(), ChatModel) and isinstance(pool.expander(), ChatModel)


def test_the_packaged_adapters_are_intact_fit_their_base_and_have_a_card():
    from rqa.llm import check_adapter_fits
    from rqa.models import ADAPTER_DIR, ADAPTERS, PACKAGED_ADAPTERS, verified_adapter

    assert ADAPTERS, "rqa ships the pipeline's fine-tune"
    assert {a.filename for a in PACKAGED_ADAPTERS} == {p.name for p in ADAPTER_DIR.glob("*.gguf")}
    for adapter in PACKAGED_ADAPTERS:
        path = verified_adapter(adapter)  # refuses a changed or missing file
        check_adapter_fits(path, offline_model_path(adapter.base))
        card = path.with_suffix(".md").read_text()
        assert adapter.sha256 in card and adapter.base in card
    files = resolve_model(Settings.load(model="qwen2.5-coder-0.5b-instruct"))
    assert files.adapter == ADAPTERS["qwen2.5-coder-0.5b-instruct"].path  # applied by default to its base
    # the default model gets the citing fine-tune, not the older one that answers fewer questions
    assert resolve_model(Settings.load(model=Settings().model)).adapter.name == "qwen2.5-coder-1.5b-instruct-cite.gguf"
    assert resolve_model(Settings.load(model=TEST_MODEL)).adapter is None  # no adapter ships for this one


def test_a_question_whose_asker_has_gone_does_not_take_the_model():
    """Waiting for the in-process model's lock ends once the asker has gone, and a question cancelled
    in the same step as the lock came free does not take it (the prompt would be read for no one)."""
    import threading

    lock, cancel = threading.Lock(), threading.Event()
    lock.acquire()
    threading.Timer(0.3, cancel.set).start()
    with pytest.raises(Cancelled):
        wait_for(lock, cancel)
    lock.release()
    with pytest.raises(Cancelled):
        wait_for(lock, cancel)  # free, but the asker has gone
    assert not lock.locked()
    wait_for(lock, None)
    assert lock.locked()
