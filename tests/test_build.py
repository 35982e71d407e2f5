"""The build pipeline: generators against a local OpenAI-compatible server, validation, splits,
memory checks, resumed training, and `python -m build all --preset tiny` end to end."""

import json
import re
import shutil
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from build.dataset import build_dataset, split_by_paper
from build.filters import informative, names_its_subject, token_entropy, with_subject
from build.generate import ExtractiveGenerator, GenerationFailed, groq_generator, openai_generator, parse_reply
from build.train import MemoryError_, check_fits, preset_with
from rqa.config import Settings
from rqa.types import GREEDY
from tests.conftest import PAPERS, ROOT

GOOD = {"question": "How does the Transformer scale dot-product attention?",
        "answer": "The Transformer divides the dot products of queries and keys by $\\sqrt{d_k}$ before the softmax [1]."}


class FakeLLM(BaseHTTPRequestHandler):
    """Speaks the chat-completions API the groq and openai SDKs call; replies from a script."""

    script: list = []
    calls: list = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeLLM.calls.append((self.path, body))
        step = FakeLLM.script.pop(0) if FakeLLM.script else ("ok", json.dumps(GOOD))
        kind, arg = step
        if kind == "sleep":
            time.sleep(arg)
            kind, arg = "ok", json.dumps(GOOD)
        if kind == "status":
            code, headers = arg
            self.send_response(code)
            for k, v in headers.items():
                self.send_header(k, v)
            payload = json.dumps({"error": {"message": f"status {code}", "type": "test"}}).encode()
        else:
            self.send_response(200)
            payload = json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                                  "choices": [{"index": 0, "finish_reason": "stop",
                                               "message": {"role": "assistant", "content": arg}}],
                                  "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}).encode()
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    FakeLLM.script, FakeLLM.calls = [], []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FakeLLM)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def chunk():
    from rqa.types import Chunk

    return Chunk("c1", "p", "Attention Is All You Need", "3.2 Attention", 1, 1, 0, 10,
                 "The Transformer scales dot products by 1/sqrt(d_k).")


@pytest.mark.parametrize("sdk", ["groq", "openai"])
def test_retries_honour_retry_after_then_succeed(server, sdk):
    slept = []
    FakeLLM.script = [("status", (429, {"Retry-After": "3"})), ("status", (500, {})), ("status", (503, {}))]
    gen = (groq_generator("test-key", base_url=server, sleep=slept.append, backoff_s=0.01) if sdk == "groq"
           else openai_generator(server + "/v1", "local-model", sleep=slept.append, backoff_s=0.01))
    assert gen(chunk()) == (GOOD["question"], GOOD["answer"])
    assert slept == [3.0, 0.02, 0.04]  # Retry-After first, then exponential backoff
    path, body = FakeLLM.calls[-1]
    assert path.endswith("/chat/completions") and body["temperature"] == 0.2 and body["max_tokens"] == 1000
    if sdk == "groq":
        assert body["model"] == "llama-3.3-70b-versatile"


def test_timeouts_are_retried_and_errors_give_up(server):
    FakeLLM.script = [("sleep", 2.0)]
    gen = openai_generator(server + "/v1", "m", timeout=0.5, sleep=lambda s: None)
    assert gen(chunk())[0] == GOOD["question"]
    FakeLLM.script = [("status", (500, {}))] * 3
    gen = openai_generator(server + "/v1", "m", max_retries=2, sleep=lambda s: None)
    with pytest.raises(GenerationFailed, match="InternalServerError"):
        gen(chunk())
    FakeLLM.script = [("status", (401, {}))]
    with pytest.raises(GenerationFailed, match="AuthenticationError"):
        gen(chunk())  # not retryable: fails at once
    with pytest.raises(GenerationFailed, match="GROQ_API_KEY"):
        groq_generator("")


def test_reply_parsing():
    assert parse_reply("```json\n" + json.dumps(GOOD) + "\n```") == (GOOD["question"], GOOD["answer"])
    assert parse_reply("Sure! " + json.dumps(GOOD) + " Hope it helps.")[0] == GOOD["question"]
    # LaTeX written into JSON unescaped, as small models do: kept as LaTeX, not escapes
    raw = '{"question": "What is \\alpha in Adam?", "answer": "$\\frac{1}{2}\\beta \\nabla f$ \\u00e9.\\nThen"}'
    assert parse_reply(raw) == ("What is \\alpha in Adam?", "$\\frac{1}{2}\\beta \\nabla f$ \u00e9.\nThen")
    for bad in ("no json here", '{"question": "q"}', '{"question": "", "answer": "a"}', "[1, 2]", ""):
        with pytest.raises(ValueError):
            parse_reply(bad)


def test_dataset_with_api_generator_counts_malformed_and_resumes(server, tmp_path):
    papers = tmp_path / "papers"
    papers.mkdir()
    shutil.copy(PAPERS / "1412.6980.pdf", papers)
    (papers / "empty.pdf").write_bytes(b"")
    (papers / "corrupt.pdf").write_bytes(b"%PDF-1.4\n garbage")
    FakeLLM.script = [("ok", "not json at all"), ("ok", '{"question": 1}')]
    gen = openai_generator(server + "/v1", "m", sleep=lambda s: None)
    out = tmp_path / "data"
    report = build_dataset([papers], out, gen, Settings(), max_per_paper=6)
    assert report.malformed == 2 and report.generated == 4
    assert {Path(p).name for p, _ in report.skipped_files} == {"empty.pdf", "corrupt.pdf"}
    card = (out / "README.md").read_text()
    assert "2 malformed" in card and "empty.pdf" in card and "1 similarity" in card
    calls = len(FakeLLM.calls)
    build_dataset([papers], out, gen, Settings(), max_per_paper=6)  # resumed: nothing generated again
    assert len(FakeLLM.calls) == calls
    assert len((out / "generated.jsonl").read_text().splitlines()) == 6
    report = build_dataset([papers], out, gen, Settings(), max_per_paper=9, minutes=0)  # out of time: no request
    assert len(FakeLLM.calls) == calls and report.generated + report.malformed == 6
    report = build_dataset([papers], out, gen, Settings(), max_per_paper=9)  # extended, not started again
    assert len(FakeLLM.calls) == calls + 3 and report.generated + report.malformed == 9


def test_an_endpoint_that_refuses_every_request_stops_the_run_at_once(server, tmp_path):
    """A wrong key or --model was recorded as a failure for every chunk (with backoff for each) and the
    run ended "done" with an empty dataset; a Retry-After of hours was slept. Both stop the run with
    its one line, the pairs so far kept for the same command to continue."""
    from build.generate import GenerationStopped

    papers = tmp_path / "papers"
    papers.mkdir()
    shutil.copy(PAPERS / "1412.6980.pdf", papers)
    slept = []
    gen = openai_generator(server + "/v1", "m", sleep=slept.append)
    out = tmp_path / "data"
    FakeLLM.script = [("ok", json.dumps(GOOD)), ("status", (401, {}))]
    with pytest.raises(GenerationStopped, match=r"the endpoint refuses the requests \(AuthenticationError"):
        build_dataset([papers], out, gen, Settings(), max_per_paper=6)
    assert len(FakeLLM.calls) == 2 and slept == []
    assert len((out / "generated.jsonl").read_text().splitlines()) == 1  # the pair before it, kept
    FakeLLM.script = [("status", (429, {"Retry-After": "3600"}))]
    with pytest.raises(GenerationStopped, match=r"asks to wait 3,600 s"):
        build_dataset([papers], out, gen, Settings(), max_per_paper=6)
    assert len(FakeLLM.calls) == 3 and slept == []
    report = build_dataset([papers], out, gen, Settings(), max_per_paper=6)  # the endpoint back: continued
    assert len(FakeLLM.calls) == 8 and report.generated == 6


def test_generation_stopped_by_its_time_budget_continues_to_the_planned_chunks(tmp_path, monkeypatch):
    """Papers are asked in turn, each paper's chunks spread over it; a run stopped by --minutes (or
    killed) and continued, or extended with a larger --max-per-paper, ends with the chunks one
    uninterrupted run would have asked about; a failed request is asked again."""
    import build.dataset as dataset
    from build.dataset import Report, generate_all, spread_order
    from build.generate import GenerationFailed
    from rqa.types import Chunk

    chunks = [Chunk(f"{p}{i}", p, p, "s", 1, 1, 0, 1, f"text {p} {i}") for p in "ab" for i in range(10)]

    class Gen:
        name, asked, fail = "fake", [], set()

        def __call__(self, chunk):
            self.asked.append(chunk.chunk_id)
            if chunk.chunk_id in self.fail:
                raise GenerationFailed("503")
            return f"What is {chunk.chunk_id}?", "It is."

    gen, cache = Gen(), tmp_path / "generated.jsonl"
    clock = iter(range(0, 10_000, 25))  # each look at the clock: 25 s later
    monkeypatch.setattr(dataset.time, "perf_counter", lambda: next(clock))
    gen.fail = {"a0"}
    generate_all(chunks, gen, cache, Report(), max_per_paper=4, minutes=1)
    assert gen.asked == ["a0", "b0"]  # stopped at the first look past 60 s; the papers took turns
    monkeypatch.setattr(dataset.time, "perf_counter", time.perf_counter)
    gen.fail = set()
    report = Report()
    generate_all(chunks, gen, cache, report, max_per_paper=4)
    plan = [f"{p}{j}" for p in "ab" for j in spread_order(10)[:4]]
    assert gen.asked[2] == "a0" and sorted(gen.asked) == sorted(plan + ["a0"])  # the failure asked again
    assert report.generated == 8 and report.failed == 0
    generate_all(chunks, gen, cache, Report(), max_per_paper=6)  # extended by two a paper
    plan = [f"{p}{j}" for p in "ab" for j in spread_order(10)[:6]]
    assert sorted(set(gen.asked)) == sorted(plan)
    assert spread_order(10)[:4] == [0, 5, 2, 7]  # spread over the paper, not its first pages


def test_offline_dataset_is_validated_and_split_by_paper(tmp_path):
    out = tmp_path / "data"
    report = build_dataset([PAPERS / "1706.03762.pdf", PAPERS / "1412.6980.pdf", PAPERS / "2106.09685.pdf"],
                           out, ExtractiveGenerator(), Settings(), max_per_paper=25)
    stages = report.stages
    assert list(stages) == ["1 similarity", "2 format", "3a entropy", "3b near-duplicates"]
    assert stages["1 similarity"]["kept"] + stages["1 similarity"]["dropped"] == report.generated
    train = [json.loads(x) for x in (out / "train.jsonl").read_text().splitlines()]
    test = [json.loads(x) for x in (out / "test.jsonl").read_text().splitlines()]
    assert train and test
    assert set(report.splits["test"]["papers"]).isdisjoint(report.splits["train"]["papers"])
    roles = [m["role"] for m in train[0]["messages"]]
    assert roles == ["system", "user", "assistant"] and train[0]["messages"][1]["content"].startswith("Sources:\n\n[1] ")
    assert {"question", "answer", "paper", "evidence"} <= set(test[0])
    assert 0 < report.question_to_context < 1


def test_a_dataset_extended_later_keeps_each_papers_side(tmp_path):
    """Rerun over one paper more (8 instead of 7), the first-time rule makes two papers test, one of
    them trained on before: its questions would have tested an adapter on a paper it learned from.
    Each paper keeps the side the earlier pairs.jsonl gave it; the new one is placed by its hash."""
    from build.dataset import sides_before

    rows = [{"paper": f"p{i}", "chunk_id": f"p{i}-{j}", "question": "q"} for i in range(7) for j in range(3)]
    first = split_by_paper(rows)
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"split": name, "paper": r["paper"]}) + "\n"
                             for name, part in first.items() for r in part))
    trained = {r["paper"] for r in first["train"] + first["val"]}
    more = rows + [{"paper": "new4", "chunk_id": f"new4-{j}", "question": "q"} for j in range(3)]
    assert {r["paper"] for r in split_by_paper(more)["test"]} & trained  # the rule alone moves one
    again = split_by_paper(more, before=sides_before(pairs))
    assert {r["paper"] for r in again["test"]} == {r["paper"] for r in first["test"]}
    assert "new4" in {r["paper"] for r in again["train"] + again["val"]}  # its hash is past 0.2


def test_a_log_cut_mid_write_resumes_and_a_broken_line_inside_is_refused(tmp_path):
    """generated.jsonl and cite's answers.jsonl are appended to as a stage goes: a kill or a full disk
    mid-write leaves half a line, which failed every resume (JSONDecodeError) and took the next
    record into it. The half line is cut away; a broken line before the end is refused in one line."""
    from build.dataset import read_log
    from rqa.errors import UserError

    log = tmp_path / "generated.jsonl"
    whole = '{"chunk_id": "a", "question": "q1"}\n{"chunk_id": "b", "question": "q2"}\n'
    log.write_text(whole + '{"chunk_id": "c", "quest')
    assert [r["chunk_id"] for r in read_log(log)] == ["a", "b"]
    assert log.read_text() == whole  # the next append starts a line of its own
    log.write_bytes(whole.encode() + b"\x00\x00\x00\x00")  # a crash's zero-filled tail
    assert len(read_log(log)) == 2 and log.read_text() == whole
    log.write_text('{"chunk_id": "a"}\n{"chunk_\n{"chunk_id": "b"}\n')
    with pytest.raises(UserError, match="has a broken line 2 before its end"):
        read_log(log)
    assert read_log(tmp_path / "none.jsonl") == []


def test_an_answer_of_citation_markers_alone_is_dropped_at_the_format_stage():
    """ "[1] [2] [3] [4] [5] [6]" is 23 characters and as varied as six words: it passed, and writing
    the dataset then failed on it at every rerun (its citation stripped, nothing was left to cite)."""
    from build.filters import Filters, well_formed
    from rqa.equations import SympyWorker

    sympy = SympyWorker(2.0)
    try:
        title = "Adam: a method for stochastic optimization"
        assert not well_formed("What does Adam keep?", "[1] [2] [3] [4] [5] [6]", title, Filters(), sympy)
        assert well_formed("What does Adam keep?", "Moving averages of the gradient [1].", title, Filters(), sympy)
    finally:
        sympy.close()


def test_validation_helpers():
    assert token_entropy("the the the the the") == 0
    assert token_entropy("low rank adaptation freezes the pretrained weights and trains two small matrices "
                         "whose product is added to each attention projection") > 3.5
    rows = [{"paper": p, "chunk_id": f"{p}{i}"} for p in "abcdefghij" for i in range(3)]
    splits = split_by_paper(rows)
    assert len({r["paper"] for r in splits["test"]}) == 2
    assert not {r["paper"] for r in splits["test"]} & {r["paper"] for r in splits["train"] + splits["val"]}
    bn = "Batch Normalization: Accelerating Deep Network Training by Reducing Internal Covariate Shift"
    assert names_its_subject("What does batch normalization do to each layer's inputs?", bn)
    assert names_its_subject("What learning rate does Adam use by default?", "Adam: a method for stochastic optimization")
    assert names_its_subject("How does LoRA initialise B?", "Low-rank adaptation")
    for anonymous in ("What is the name of the method proposed in this paper?", "What does Figure 3 show?",
                      "How does the deep neural network train?"):
        assert not names_its_subject(anonymous, bn if "Figure" in anonymous else "Deep Neural Network Training")
    assert with_subject("What beam size is used?", "ATTENTION IS ALL YOU NEED") == 'In "Attention Is All You Need", what beam size is used?'
    assert with_subject("What is the weight decay?", bn) == 'In "Batch Normalization", what is the weight decay?'
    assert with_subject("What does batch normalization do?", bn) == "What does batch normalization do?"
    assert informative("h = 8 parallel attention heads [1].", 3.5)  # short and concise: kept
    assert not informative("heads heads heads heads heads heads heads", 3.5)  # repetition: dropped


def test_publish_stages_only_into_a_folder_it_staged_before(tmp_path):
    """`--out .` emptied the checkout: a folder holding anything publish did not stage is refused."""
    from build.publish import STAGED, clear_staging
    from rqa.errors import UserError

    mine = tmp_path / "work"
    (mine / "notes").mkdir(parents=True)
    (mine / "notes" / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="holds files publish did not stage"):
        clear_staging(mine)
    assert (mine / "notes" / "keep.txt").read_text() == "mine"
    staged = tmp_path / "publish"
    clear_staging(staged)  # new: made, and marked
    (staged / "model").mkdir()
    clear_staging(staged)  # staged before: emptied again
    assert sorted(p.name for p in staged.iterdir()) == [STAGED]


def test_publish_serves_q8_0_for_lookups_where_the_q4_0_fine_tune_answers_fewer_questions():
    from build.publish import lookup_file

    def rows(q4, q8, n=20):
        return {"base q4_0": {"fact_accuracy": 0.9, "questions": n},
                "fine-tuned q4_0": {"fact_accuracy": q4, "questions": n},
                "fine-tuned q8_0": {"fact_accuracy": q8, "questions": n}}

    # the fourth cpu run: q4_0 15 + 12 right, q8_0 16 + 15 (held-out 42, dev 20)
    file, why = lookup_file({"held-out": rows(0.3571, 0.381, 42), "dev": rows(0.6, 0.75)})
    assert file == "model-q8_0.gguf" and why == "fine-tuned q4_0 answered 27 questions correctly, q8_0 31"
    # a tie keeps the default routing (q4_0 for lookups): it costs less memory and time
    assert lookup_file({"dev": rows(0.75, 0.75)})[0] == "model-q4_0.gguf"
    assert lookup_file({"held-out": rows(0.5, 0.45, 42), "dev": rows(0.6, 0.65)})[0] == "model-q4_0.gguf"
    only_q4 = {"held-out": {"fine-tuned q4_0": {"fact_accuracy": 0.5, "questions": 4}}}
    assert lookup_file(only_q4) == ("model-q4_0.gguf", "the evaluation does not compare the fine-tune's q4_0 and q8_0")


def test_configs_that_cannot_fit_fail_before_loading():
    with pytest.raises(MemoryError_, match="needs a CUDA GPU") as refused:
        check_fits(preset_with("t4"), 3_085_938_688, 2048, 36, 151_936)
    # the production recipe must pass its own check on a 16 GB T4 (15 GiB usable, 90 % allowed), and
    # not promise less than the 10.0 GiB a GPU reserved for it at 4 x 4096 tokens (docs/BENCHMARKS.md)
    estimate = float(re.search(r"about ([0-9.]+) GiB", str(refused.value)).group(1))
    assert 10.0 <= estimate <= 0.9 * 15.0
    with pytest.raises(MemoryError_, match="Lower --batch-size or --max-length"):
        check_fits(preset_with("cpu", batch_size=64, max_length=65536), 268_000_000, 640, 18, 262_144)
    assert "GiB" in check_fits(preset_with("tiny"), 17_000_000, 64, 2, 262_144)


def _chat_data(folder: Path, train: int, val: int) -> Path:
    folder.mkdir()
    rows = [{"messages": [{"role": "user", "content": f"What rank does LoRA use in run {i}?"},
                          {"role": "assistant", "content": f"Rank {i} [1]."}]} for i in range(train + val)]
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:train]))
    (folder / "val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[train:]))
    return folder


def test_interrupted_training_resumes(tmp_path):
    from transformers import TrainerCallback

    from build.train import train

    data = _chat_data(tmp_path / "data", train=10, val=2)

    class Crash(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 3:
                raise KeyboardInterrupt("simulated kill")

    preset = preset_with("tiny", max_steps=4, epochs=1)
    with pytest.raises(KeyboardInterrupt):
        train(data, tmp_path / "run", preset, callbacks=[Crash()])
    assert (tmp_path / "run" / "checkpoints" / "checkpoint-2").exists()
    logs = []
    train(data, tmp_path / "run", preset, log=logs.append)
    assert any("resuming from" in line and "checkpoint-" in line for line in logs)
    metrics = json.loads((tmp_path / "run" / "train_metrics.json").read_text())
    assert metrics["steps"] == 4 and (tmp_path / "run" / "loss.png").stat().st_size > 1000


def test_a_checkpoint_cut_short_is_passed_over_and_an_empty_split_refused_before_loading(tmp_path):
    """A run stopped while it saved leaves checkpoint-N without trainer_state.json (the Trainer writes it
    last): every resume from it failed. And an empty split failed in datasets after the model loaded."""
    from build.train import _last_checkpoint, train
    from rqa.errors import UserError

    folder = tmp_path / "checkpoints"
    for step, whole in ((4, True), (8, True), (12, False)):
        (folder / f"checkpoint-{step}").mkdir(parents=True)
        if whole:
            (folder / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    (folder / "checkpoint-final").mkdir()
    assert _last_checkpoint(folder) == folder / "checkpoint-8"
    data = _chat_data(tmp_path / "data", train=4, val=2)
    (data / "val.jsonl").write_text("")
    with pytest.raises(UserError, match=r"val.jsonl holds no examples: the val split is empty"):
        train(data, tmp_path / "run", preset_with("tiny", max_steps=2))
    assert not (tmp_path / "run").exists()  # refused before anything was loaded or written


def test_a_long_run_checkpoints_every_so_many_steps(tmp_path):
    """--save-every: a run of several CPU hours evaluates and checkpoints every N optimizer steps, so a
    stopped run loses at most N steps and each checkpoint is an adapter that can be measured."""
    from build.train import _sft_config

    default = _sft_config(preset_with("cpu"), tmp_path)
    assert default.save_strategy == "epoch" and default.eval_strategy == "epoch"
    every = _sft_config(preset_with("cpu", save_every=25), tmp_path)
    assert (every.save_strategy, every.save_steps, every.eval_strategy, every.eval_steps) == ("steps", 25, "steps", 25)
    assert _sft_config(preset_with("tiny", max_steps=12), tmp_path).save_steps == 3  # four times a run


def test_the_tokenizer_saved_from_the_gguf_is_the_gguf_s_own():
    from transformers import AutoTokenizer

    from build.models import TINY_TOKENIZER, _gguf, load_tokenizer

    saved, gguf = load_tokenizer(TINY_TOKENIZER), _gguf(TINY_TOKENIZER)
    own = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    msgs = [{"role": "system", "content": "Answer."}, {"role": "user", "content": "What is d_k? 31.0·10^{6}, β₂ [1]"},
            {"role": "assistant", "content": "It is √d [2]."}]
    assert saved.apply_chat_template(msgs, add_generation_prompt=True) == own.apply_chat_template(msgs, add_generation_prompt=True)
    text = (ROOT / "README.md").read_text()[:5000]
    assert saved(text).input_ids == own(text).input_ids and len(saved) == len(own)
    assert (saved.eos_token, saved.bos_token) == (own.eos_token, own.bos_token)


def test_train_cli_takes_another_base_and_reports_the_loop_rate(tmp_path):
    from build.models import TINY_TOKENIZER, load_tokenizer, tiny_model

    base = tmp_path / "base"  # a local model folder stands in for a Hub id such as Qwen/Qwen2.5-1.5B-Instruct
    tok = load_tokenizer(TINY_TOKENIZER)
    tiny_model(tok).save_pretrained(str(base))
    tok.save_pretrained(str(base))
    data = _chat_data(tmp_path / "data", train=4, val=2)
    run = subprocess.run([sys.executable, "-m", "build", "train", "--preset", "cpu", "--base", str(base),
                          "--data", str(data), "--out", str(tmp_path / "run"), "--max-steps", "2"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "train_metrics.json").read_text())
    assert metrics["preset"]["base"] == str(base) and metrics["preset"]["lora_dropout"] == 0.1  # the cpu recipe
    assert metrics["steps"] == 2 and metrics["eval_runtime_s"] > 0
    # bf16 autocast where the CPU computes bf16 in hardware, else fp32 (fp32 weights either way)
    from build.presets import PRESETS, bf16_autocast

    assert metrics["mixed_precision"] == ("bf16" if bf16_autocast(PRESETS["cpu"]) else "no")
    assert metrics["loop_tokens_per_s"] > metrics["tokens_per_s"] > 0  # evaluation time left out of the loop rate
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").exists()


def test_cpu_loss_equals_the_models_own_completion_loss(tmp_path):
    """The CPU loss path (logits of the completion positions only) is the same objective as the
    model's full forward with prompt labels masked, on a padded batch of two."""
    import torch
    from datasets import Dataset
    from trl import SFTConfig

    from build.models import TINY_TOKENIZER, load_tokenizer, tiny_model
    from build.train import _sft_trainer_class

    tok = load_tokenizer(TINY_TOKENIZER)
    model = tiny_model(tok)
    data = Dataset.from_list([{"prompt": [{"role": "user", "content": "Why?"}],
                               "completion": [{"role": "assistant", "content": "Because [1]."}]}])
    trainer = _sft_trainer_class()(model=model, args=SFTConfig(output_dir=str(tmp_path), use_cpu=True, report_to=[],
                                                                  bf16=False), train_dataset=data, processing_class=tok)
    enc = tok(["What rank does LoRA use? Rank 16 [1].", "Why? Because [2]."], return_tensors="pt", padding=True)
    labels = enc.input_ids.masked_fill(enc.attention_mask == 0, -100)
    labels[:, :4] = -100  # the prompt
    inputs = {"input_ids": enc.input_ids, "attention_mask": enc.attention_mask, "labels": labels}
    ours = trainer.compute_loss(trainer.model, dict(inputs))
    reference = trainer.model(**inputs).loss  # transformers' causal-LM loss: mean NLL over the labelled tokens
    assert torch.isfinite(ours) and torch.allclose(ours, reference, rtol=1e-4), (ours, reference)
    n = int((labels[:, 1:] != -100).sum())
    assert torch.allclose(trainer.compute_loss(trainer.model, dict(inputs), num_items_in_batch=2 * n), reference / 2,
                          rtol=1e-4)  # divided by the accumulated token count when the Trainer passes one


def test_build_all_tiny_end_to_end_then_dpo(tmp_path):
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, "-m", "build", "all", "--preset", "tiny", "--papers", str(PAPERS),
                          "--out", str(out), "--max-papers", "3"], cwd=ROOT, capture_output=True, text=True,
                         timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    for f in ["data/train.jsonl", "data/val.jsonl", "data/test.jsonl", "data/README.md", "run/loss.png",
              "run/adapter/adapter_model.safetensors", "export/model-q4_0.gguf", "export/model-q8_0.gguf",
              "export/export_report.json", "export/adapter-f16.gguf", "eval/evaluation.md", "eval/evaluation.json", "eval/evaluation.png",
              "publish/model/README.md", "publish/model/model-q4_0.gguf", "publish/model/adapter-f16.gguf", "publish/index/manifest.json",
              "publish/space/app.py", "publish/space/README.md", "publish/space/rqa/web.py",
              "embedder/model.safetensors", "publish/index/embedder/model.safetensors",
              "timings.json"]:
        assert (out / f).exists(), f
    report = json.loads((out / "export" / "export_report.json").read_text())
    assert set(report["files"]) == {"q4_0", "q8_0"} and all(v["perplexity"] > 1 for v in report["files"].values())
    assert report["base"] == {"q4_0": "base-q4_0.gguf", "q8_0": "base-q8_0.gguf"}
    # q4_0 keeps the LoRA-adapted tensors at q8_0 (rounding erases a LoRA update), the base alike
    # (rqa's header reader: gguf's GGUFReader reads the whole vocabulary, 20 s a file here)
    from gguf import GGMLQuantizationType

    from rqa.gguf_header import read_header

    for name in ("model-q4_0.gguf", "base-q4_0.gguf"):
        types = {(t.split(".")[-2], GGMLQuantizationType(kind).name)
                 for t, kind in read_header(out / "export" / name).types.items()
                 if t.endswith(".weight") and t.startswith("blk.")}
        assert {kind for part, kind in types if part in ("attn_q", "attn_k", "attn_v", "attn_output")} == {"Q8_0"}
        assert {kind for part, kind in types if part in ("ffn_up", "ffn_gate", "ffn_down")} == {"Q4_0"}
    # the GGUF LoRA adapter, applied by the app to the base at load, answers as the merged model
    # does and unlike the base; on another base it is refused in one line
    from rqa.config import Settings
    from rqa.errors import ModelError
    from rqa.llm import ModelPool

    assert report["adapter"]["path"] == "adapter-f16.gguf" and report["adapter"]["bytes"] < 1_000_000
    # --adapter-only writes the adapter and nothing else; --scale ships a share of the update as a file
    # (the same tensors, its LoRA alpha times the share); 0 is refused in one line
    export_only = [sys.executable, "-m", "build", "export", "--run", str(out / "run"), "--preset", "tiny", "--adapter-only"]
    half = subprocess.run([*export_only, "--out", str(tmp_path / "half"), "--scale", "0.5"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert half.returncode == 0, half.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "half").iterdir()) == ["adapter-f16.gguf", "export_report.json"]
    from gguf import GGUFReader

    def tensors(path):
        return {t.name: bytes(t.data) for t in GGUFReader(path).tensors}

    def alpha(path):
        return read_header(path).fields["adapter.lora.alpha"]

    assert tensors(tmp_path / "half" / "adapter-f16.gguf") == tensors(out / "export" / "adapter-f16.gguf")
    assert alpha(tmp_path / "half" / "adapter-f16.gguf") == alpha(out / "export" / "adapter-f16.gguf") / 2
    zero = subprocess.run([*export_only, "--out", str(tmp_path / "zero"), "--scale", "0"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert zero.returncode == 2 and zero.stderr.strip() == \
        "error: --scale must be a number above 0 (got 0.0); to serve the stock base, set RQA_ADAPTER=none"
    msgs = [{"role": "system", "content": "Answer."}, {"role": "user", "content": "What is attention?"}]

    def greedy(model_path, adapter="none", engine="in-process", scale=1.0):
        pool = ModelPool(Settings.load(model_path=str(out / "export" / model_path), adapter=adapter, n_ctx=512,
                                       adapter_scale=scale), engine=engine)
        try:
            return "".join(pool.get().stream(msgs, 16, GREEDY)), pool.get().adapter_name
        finally:
            pool.close()

    lora = str(out / "export" / "adapter-f16.gguf")
    assert greedy("base-q8_0.gguf", lora) == (greedy("model-q8_0.gguf")[0], "adapter-f16.gguf")
    assert greedy("base-q8_0.gguf")[0] != greedy("model-q8_0.gguf")[0]
    # the LoRA scale interpolates between the base (near 0) and the model as trained (1), in-process
    # and on llama-server alike
    assert greedy("base-q8_0.gguf", lora, scale=0.001)[0] == greedy("base-q8_0.gguf")[0]
    on_server = greedy("base-q8_0.gguf", engine="server")[0]
    assert greedy("base-q8_0.gguf", lora, "server", scale=0.001)[0] == on_server
    assert greedy("base-q8_0.gguf", lora, "server", scale=1.0)[0] != on_server
    # the half-update file answers as the adapter at LoRA scale 0.5
    assert greedy("base-q8_0.gguf", str(tmp_path / "half" / "adapter-f16.gguf"))[0] == \
        greedy("base-q8_0.gguf", lora, scale=0.5)[0]
    with pytest.raises(ModelError, match=r"^adapter adapter-f16.gguf does not fit smollm2-135m-instruct.gguf: it was made for qwen2 models"):
        ModelPool(Settings.load(model="smollm2-135m-instruct", adapter=lora, n_ctx=512)).get()
    with pytest.raises(ModelError, match=r"does not fit qwen2.5-coder-0.5b-instruct.gguf: its tensor blk.0.attn_k"):
        ModelPool(Settings.load(model="qwen2.5-coder-0.5b-instruct", adapter=lora, n_ctx=512)).get()
    evaluation = json.loads((out / "eval" / "evaluation.json").read_text())
    assert set(evaluation["held-out"]) == {"base q4_0", "fine-tuned q4_0"}
    assert {"bleu4", "rougeL_f1", "fact_accuracy", "citation_precision", "recall@5", "latency_s",
            "perplexity"} <= set(evaluation["held-out"]["base q4_0"])
    assert "| metric | base q4_0 | fine-tuned q4_0 | delta |" in (out / "eval" / "evaluation.md").read_text()
    assert set(json.loads((out / "timings.json").read_text())) == {"dataset", "embedder", "train", "export", "evaluate",
                                                                  "publish"}
    # the preference loop on top: pairs from a ratings database the test writes, DPO on the SFT adapter
    from rqa.ratings import RatingsDB

    db = RatingsDB(tmp_path / "ratings.sqlite")
    for q, better, worse in [("How many heads does the Transformer use?", "8 heads [1].", "Many heads."),
                             ("What does Adam's bias correction do?", "It divides by 1 - beta^t [1].", "Nothing.")]:
        a, b = db.add_item(q, better, "m"), db.add_item(q, worse, "m")
        db.rate(a, "ann", 4, "correct")
        db.rate(b, "ann", 2, "wrong")
    db.feedback(db.add_item("What is LoRA?", "Low-rank adapters [2].", "m"), 1, "client-1")
    cli = [sys.executable, "-m", "build"]
    prefs = subprocess.run(cli + ["preferences", "--db", str(tmp_path / "ratings.sqlite"), "--index", str(out / "index"),
                                  "--out", str(out / "prefs")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert prefs.returncode == 0, prefs.stderr[-2000:]
    pairs = [json.loads(x) for x in (out / "prefs" / "preferences.jsonl").read_text().splitlines()]
    assert len(pairs) == 2 and pairs[0]["chosen"][0]["content"] == "8 heads [1]."
    assert pairs[0]["prompt"][1]["content"].startswith("Sources:\n\n[1] ")
    assert "| questions with a single answer (dropped) | 1 |" in (out / "prefs" / "README.md").read_text()
    # one step on one pair: on a CPU, TRL's DPO scores every position of the prompt against the whole
    # 151,936-token vocabulary, for the policy and the reference (a step of two pairs took 53 s)
    dpo = subprocess.run(cli + ["train", "--method", "dpo", "--preset", "tiny", "--preferences", str(out / "prefs"),
                                "--sft", str(out / "run"), "--out", str(out / "dpo"), "--max-steps", "1", "--batch-size", "1"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert dpo.returncode == 0, dpo.stderr[-3000:]
    metrics = json.loads((out / "dpo" / "train_metrics.json").read_text())
    assert metrics["method"] == "dpo" and metrics["steps"] == 1 and metrics["reward_margin_last"] is not None
    assert (out / "dpo" / "adapter" / "adapter_model.safetensors").exists()
    # the automatic annotator: the SFT export answers train questions twice, each answer rated
    judged = subprocess.run(cli + ["judge", "--data", str(out / "data"), "--model", str(out / "export" / "model-q8_0.gguf"),
                                   "--index", str(out / "index"), "--db", str(tmp_path / "judge.sqlite"),
                                   "--samples", "2", "--limit", "2"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert judged.returncode == 0, judged.stderr[-3000:]
    rated = RatingsDB(tmp_path / "judge.sqlite").ratings()
    asked = int(re.search(r"answers to (\d+) train questions", judged.stdout).group(1))
    assert asked >= 1 and len(rated) == 2 * asked and {r["annotator"] for r in rated} == {"auto-judge"}
    assert all(r["correctness"] in ("correct", "partly", "wrong") and 1 <= r["depth"] <= 5 for r in rated)

    # the fine-tuned GGUF carries Qwen's chat template (ChatML), so rqa serves it with turns
    from llama_cpp import Llama

    from rqa.llm import FORMATS, chat_format

    fmt = chat_format(Llama(model_path=str(out / "export" / "model-q4_0.gguf"), n_ctx=64, verbose=False).metadata)
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}]
    assert fmt.name == "gguf-template" and fmt.render(msgs) == FORMATS["chatml"].render(msgs)


def test_llm_judge_through_an_openai_compatible_endpoint(server):
    import openai

    from build.evaluate import judge

    client = (openai.OpenAI(base_url=server + "/v1", api_key="x", max_retries=0), "judge-model")
    FakeLLM.script = [("ok", "Yes."), ("ok", "no")]
    q = {"question": "How many heads?", "answer": "8 heads."}
    assert judge(client, q, "It uses 8 heads.") is True
    assert judge(client, q, "It uses 12 heads.") is False
    assert "Reference answer: 8 heads." in FakeLLM.calls[0][1]["messages"][0]["content"]
    assert judge(None, q, "anything") is None


def test_training_examples_are_the_apps_prompt_citing_the_own_chunk(tmp_path):
    from build.dataset import cite, to_example
    from rqa.prompt import SYSTEM
    from rqa.types import Chunk, Hit

    assert cite("It uses 8 heads [1]. Each has $d_k = 64$", 3) == "It uses 8 heads [3]. Each has $d_k = 64$ [3]"
    own = chunk()
    others = [Hit(Chunk(f"o{i}", "q", "Other", "1 Intro", 1, 1, 0, 5, f"Unrelated text {i}."), 1.0) for i in range(4)]
    row = {"question": "How are dot products scaled?", "answer": "By 1/sqrt(d_k).", "chunk": own,
           "hits": others[:2] + [Hit(own, 1.0)] + others[2:]}
    example = to_example(row, source_chars=600)
    system, user, assistant = example["messages"]
    assert system["content"] == SYSTEM and user["content"].count("\n[") == 5
    assert "[3] Attention Is All You Need - 3.2 Attention" in user["content"]
    assert assistant["content"] == "By 1/sqrt(d_k) [3]."
    row["hits"] = others + [others[0]]  # retrieval missed the chunk: it takes the last place
    assert to_example(row, 600)["messages"][-1]["content"].endswith("[5].")


def test_offline_teacher_writes_pairs_through_llama_server(tmp_path):
    """The teacher path end to end with the small test model: the server starts on 127.0.0.1, every
    chunk gets a request through the OpenAI client, replies are parsed or counted malformed, and
    the server is gone afterwards."""
    from build.dataset import Report, generate_all
    from build.generate import openai_generator
    from build.teacher import local_teacher
    from rqa.models import offline_model_path
    from rqa.types import Chunk

    chunks = [Chunk(f"c{i}", "p", "Adam", "2 Algorithm", 1, 1, 0, 10,
                    "Adam keeps exponential moving averages of the gradient and its square, with decay rates "
                    "beta1 = 0.9 and beta2 = 0.999, and corrects their initialization bias.") for i in range(2)]
    report = Report()
    with local_teacher(str(offline_model_path("smollm2-135m-instruct"))) as base:
        assert base.startswith("http://127.0.0.1:")
        # a loaded 2-core machine has made one 120-token reply take minutes: the test is not about speed
        gen = openai_generator(base, "smollm2-135m-instruct", timeout=600, max_retries=0, max_tokens=120)
        good = generate_all(chunks, gen, tmp_path / "generated.jsonl", report)
    assert report.generated + report.malformed == 2 and report.failed == 0 and len(good) == report.generated
    assert report.pairs_per_minute > 0
    import urllib.request

    with pytest.raises(OSError):
        urllib.request.urlopen(base + "/models", timeout=2)



def test_a_killed_dataset_stage_takes_its_teacher_server_with_it(tmp_path):
    import signal
    import urllib.request

    from rqa.models import offline_model_path

    script = ("import sys, time\nfrom build.teacher import local_teacher\n"
              f"with local_teacher({str(offline_model_path('smollm2-135m-instruct'))!r}) as base:\n"
              "    print(base, flush=True)\n    time.sleep(120)\n")
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    base = parent.stdout.readline().strip()
    assert urllib.request.urlopen(base + "/models", timeout=5).status == 200
    parent.send_signal(signal.SIGKILL)  # no `finally` runs in the parent
    parent.wait()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(base + "/models", timeout=1)
            time.sleep(0.5)
        except OSError:
            return
    pytest.fail("the teacher server outlived the process that started it")


def test_cite_writes_the_models_own_answers_with_rqas_citations_and_resumes(shared_index, tmp_path):
    from build.cite import cite, cite_in_sentences
    from rqa.errors import UserError
    from tests.conftest import ScriptedModel, ScriptedPool

    assert cite_in_sentences("It uses 4000 warm-up steps. [3] [1] The rate then decays [2].") == \
        "It uses 4000 warm-up steps [3][1]. The rate then decays [2]."
    assert cite_in_sentences("Two parts:\n\nA scale [1].\n\nA shift. [2]") == "Two parts:\n\nA scale [1].\n\nA shift [2]."
    data = tmp_path / "qa"
    data.mkdir()
    with pytest.raises(UserError, match="has no pairs.jsonl"):
        cite(data, shared_index.index_dir, tmp_path / "cite", n_train=1, n_val=0, pool=None)
    asked = [("train", "How does LoRA adapt a pretrained model?"), ("train", "What does the Transformer use instead "
             "of recurrence?"), ("train", "What is the warmup schedule of the Transformer?"), ("val", "What does "
             "Adam keep estimates of?")]
    (data / "pairs.jsonl").write_text("".join(json.dumps({"split": s, "question": q, "chunk_id": "c", "paper": "p"}) + "\n"
                                              for s, q in asked))

    def reply(messages):  # the words of a source, uncited; an abstention for the schedule question
        if "warmup" in messages[-1]["content"]:
            return "The sources do not say."
        source = messages[-1]["content"].split("\n[1] ", 1)[1].split("\n", 1)[1]
        return " ".join(source.split()[:40]).rstrip(".") + "."

    model = ScriptedModel(reply)
    out = tmp_path / "cite"
    counts = cite(data, shared_index.index_dir, out, n_train=2, n_val=1, pool=ScriptedPool(model), log=lambda *_: None)
    assert len(model.prompts) == 3 and counts["train"]["answered"] == 2
    rows = [json.loads(x) for x in (out / "train.jsonl").read_text().splitlines()]
    assert len(rows) == counts["train"]["kept"] >= 1
    system, user, assistant = rows[0]["messages"]
    assert user["content"].startswith("Sources:\n\n[1] ")  # the app's own prompt
    answered = [json.loads(x) for x in (out / "answers.jsonl").read_text().splitlines()]
    kept = next(r for r in answered if r["kept"] and r["split"] == "train")
    assert "[" not in kept["model_text"] and assistant["content"] == cite_in_sentences(kept["body"])
    assert re.search(r" \[\d\](\[\d\])*\.$", assistant["content"])  # rqa's citation, written in
    # a larger --train resumes: only the new question is asked, and its abstention is no target
    counts = cite(data, shared_index.index_dir, out, n_train=3, n_val=1, pool=ScriptedPool(model), log=lambda *_: None)
    assert len(model.prompts) == 4 and counts["train"]["answered"] == 3
    assert counts["dropped"].get("abstained") == 1
    # a question that cannot be asked (past the question bound) is recorded, and the run goes on past
    # it; every rerun stopped at it. A question no longer in the dataset trains nothing.
    long = "Why " + "does LoRA freeze the pretrained weights " * 60 + "?"
    asked = [("train", long)] + asked[:2] + [("train", "What rank does LoRA use?")] + asked[3:]
    (data / "pairs.jsonl").write_text("".join(json.dumps({"split": s, "question": q, "chunk_id": "c", "paper": "p"})
                                              + "\n" for s, q in asked))
    counts = cite(data, shared_index.index_dir, out, n_train=4, n_val=1, pool=ScriptedPool(model), log=lambda *_: None)
    assert counts["dropped"].get("not askable") == 1 and counts["train"]["answered"] == 4  # the schedule question gone
    assert len(model.prompts) == 5  # "What rank does LoRA use?" answered, after the long one
    again = cite(data, shared_index.index_dir, out, n_train=4, n_val=1, pool=ScriptedPool(model), log=lambda *_: None)
    assert again == counts and len(model.prompts) == 5


def test_export_refuses_in_one_line_a_run_without_adapter_and_a_scale_that_cannot_apply(tmp_path):
    from argparse import Namespace

    from build.export import cli, scaled_adapter
    from rqa.errors import UserError

    paths = dict(run=tmp_path / "run", out=tmp_path / "out", preset="tiny", data=None)
    # a run stopped before it wrote its adapter (checkpoints only): one line, before the base loads
    with pytest.raises(UserError, match=r"holds no trained adapter \(adapter/adapter_config.json\)"):
        cli(Namespace(**paths, adapter_only=True, scale=1.0))
    (tmp_path / "run" / "adapter").mkdir(parents=True)
    (tmp_path / "run" / "adapter" / "adapter_config.json").write_text("{}")
    with pytest.raises(UserError, match=r"^--scale applies to the adapter alone: add --adapter-only$"):
        cli(Namespace(**paths, adapter_only=False, scale=0.5))
    with pytest.raises(UserError, match=r"^--scale must be a number above 0 \(got inf\)"):
        cli(Namespace(**paths, adapter_only=True, scale=float("inf")))
    # per-module alphas: the converter would keep only lora_alpha, so the share would not be what ships
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 16, "lora_alpha": 64, "alpha_pattern": {"q_proj": 32}}))
    with pytest.raises(UserError, match=r"^--scale needs one LoRA alpha for every module"):
        scaled_adapter(adapter, 0.5, tmp_path / "scaled")
    assert not (tmp_path / "scaled").exists()



def test_an_export_tool_missing_or_failing_is_the_clis_one_line_error(tmp_path, monkeypatch):
    """`build export` without `make install` printed a traceback ending in the converter's message:
    an export failure is a UserError, which the CLI prints as its one error line (exit 2)."""
    from build.export import converter_script
    from rqa.errors import UserError

    monkeypatch.setattr(sys, "prefix", str(tmp_path))  # a venv without .venv/converter
    with pytest.raises(UserError, match=r"llama.cpp converter not found at .*: run `make install`"):
        converter_script()


def test_judge_run_again_continues_instead_of_judging_the_same_questions_twice(shared_index, tmp_path, monkeypatch):
    """A second `build judge` (after a stop, or the same command again) judged the first questions
    again: each question's answers then made twice the preference pairs. Questions this model's
    answers were judged on before are passed over; --limit counts them."""
    import rqa.llm
    from build.judge import judge
    from rqa.ratings import RatingsDB
    from tests.conftest import ScriptedModel, ScriptedPool

    data = tmp_path / "data"
    data.mkdir()
    facts = {"a": ("How many heads does the Transformer use?", "The Transformer uses 8 heads [1]."),
             "b": ("What warmup does the Transformer use?", "The Transformer warms up for 4000 steps [1]."),
             "c": ("What dropout does the Transformer use?", "The Transformer uses a dropout of 0.1 [1].")}
    (data / "chunks.jsonl").write_text("".join(json.dumps({"chunk_id": k, "text": a}) + "\n" for k, (_, a) in facts.items()))
    (data / "generated.jsonl").write_text("".join(json.dumps({"chunk_id": k, "answer": a}) + "\n" for k, (_, a) in facts.items()))
    (data / "pairs.jsonl").write_text("".join(json.dumps({"split": "train", "question": q, "chunk_id": k, "paper": "p"})
                                              + "\n" for k, (q, _) in facts.items()))
    model = tmp_path / "model-q8_0.gguf"
    model.write_bytes(b"GGUF")
    monkeypatch.setattr(rqa.llm, "ModelPool", lambda settings, files: ScriptedPool(ScriptedModel("It uses 8 heads [1].")))
    db = tmp_path / "judge.sqlite"
    run = lambda limit: judge(data, model, shared_index.index_dir, db, limit=limit, log=lambda *_: None)  # noqa: E731
    first = run(2)
    assert (first.questions, first.answers) == (2, 4)
    again = run(2)  # the same command again: nothing more to judge
    assert (again.questions, again.already_judged, again.answers) == (0, 2, 0)
    more = run(3)
    assert (more.questions, more.already_judged) == (1, 2)
    rated = RatingsDB(db).ratings()
    assert len(rated) == 6 and len({r["question"] for r in rated}) == 3


def test_dpo_starts_from_the_base_its_sft_run_was_trained_on(tmp_path, monkeypatch):
    """An SFT run trained with --base on another model was merged, for DPO, into the preset's base:
    a shape error, or a silently wrong model where the shapes happen to match. --epochs was ignored."""
    from argparse import Namespace

    import build.dpo
    from build.train import cli
    from rqa.errors import UserError

    sft = tmp_path / "sft"
    (sft / "adapter").mkdir(parents=True)
    (sft / "train_metrics.json").write_text(json.dumps({"preset": {"base": "Qwen/Qwen2.5-1.5B-Instruct"}}))
    prefs = tmp_path / "prefs"
    prefs.mkdir()
    (prefs / "preferences.jsonl").write_text(json.dumps({"prompt": "q", "chosen": "a", "rejected": "b"}) + "\n")
    merged = []

    class Stop(Exception):
        pass

    def merge(adapter, tiny_base, base, out):
        merged.append(base)
        raise Stop

    monkeypatch.setattr(build.dpo, "merge", merge)
    args = dict(preset="cpu", base=None, max_steps=None, batch_size=None, max_length=None, epochs=None,
                method="dpo", preferences=prefs, sft=sft, out=tmp_path / "dpo", data=None)
    with pytest.raises(Stop):
        cli(Namespace(**args, save_every=None))
    assert merged == ["Qwen/Qwen2.5-1.5B-Instruct"]  # not the cpu preset's qwen2.5-coder-0.5b
    with pytest.raises(UserError, match="--save-every applies to SFT runs"):
        cli(Namespace(**args, save_every=4))


def test_the_stages_read_jsonl_records_whose_text_holds_unicode_line_separators(tmp_path):
    """A paper's text may hold U+2028 or U+0085, which the dataset writes unescaped (ensure_ascii=False);
    str.splitlines cut those records in pieces and the next stage failed on them."""
    from build.cite import questions
    from build.dataset import read_jsonl

    rows = [{"question": f"What does line{sep}separation do?", "split": "train", "chunk_id": "c1"}
            for sep in ("\u2028", "\x85")]
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                                          encoding="utf-8")
    assert read_jsonl(tmp_path / "pairs.jsonl") == rows
    assert sorted(questions(tmp_path, "train")) == sorted(r["question"] for r in rows)
