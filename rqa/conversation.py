"""Follow-up questions in a conversation.

"How many warmup steps does it use?", asked after "What optimizer does the Transformer use?", is
about the Transformer; searched alone it finds any paper's warmup, and the model cannot tell what
"it" is. A question that leans on an earlier one (it refers back, or begins "and ..." / "what
about ...", and names nothing of its own) is searched for together with the questions it follows,
back to the last one that stood alone, and the model reads them too. A question that stands alone
is answered exactly as without a conversation.
"""

from __future__ import annotations

import re

# Words that point back at something said before; "that" only where it stands for a thing ("that
# paper", "why is that?"), not where it joins a clause ("the model that ..."). Not "the model" or
# "the method": questions that stand alone use them before the name ("the model dimension of BERT").
REFERS_BACK = re.compile(  # whole words: "iterations", "item" and "theme" refer to nothing
    r"\b(?:it|its|it's|they|them|their|theirs|these|those|this(?!\s+(?:question|time))"
    r"|the\s+(?:paper|authors?|above|latter|former)"
    r"|that(?=\s*[?.,!]|\s*$|\s+(?:paper|model|method|work|approach|one|result|number|value|setting)\b))\b", re.I)
FOLLOW_LEADS = re.compile(r"^\s*(?:and|also|what\s+about|how\s+about|and\s+what\s+about|same\s+for|then)\b", re.I)
# A name: an acronym or a word with inner capitals or digits (BERT, GPT-3, ResNet, ViT-H/14), or a
# capitalised word inside the sentence (Adam, Transformer). Not names: words a question starts
# with or that point into a paper.
NAME = re.compile(r"\b(?:[A-Z]{2,}[\w-]*|[A-Za-z]+[A-Z0-9][\w-]*|[A-Z][a-z]{2,}[\w-]*)")
NOT_NAMES = {"What", "Which", "How", "Why", "When", "Where", "Who", "Whom", "Whose", "Does", "Did", "Do", "Is",
             "Are", "Was", "Were", "Can", "Could", "Would", "Should", "Will", "And", "Also", "Then", "The", "This",
             "That", "These", "Those", "It", "Its", "They", "Their", "In", "On", "For", "According", "Table",
             "Figure", "Fig", "Section", "Appendix", "Equation", "Eq", "Algorithm", "Theorem", "Lemma", "Same",
             "Please", "Tell", "Explain", "Describe", "Give", "List", "Compare"}
# Nor the hardware, units, metrics and data sets that any paper reports on: "On how many TPU v4 chips
# was it trained?", "How many A100 GPUs did it use?" and "What MMLU score does it get?" still ask
# about the paper before
SHARED_TERMS = {"BLEU", "ROUGE", "METEOR", "F1", "EM", "MRR", "AUC", "FID", "WER", "PPL", "SOTA", "ImageNet", "WMT",
                "GLUE", "SuperGLUE", "SQuAD", "CIFAR", "COCO", "MNIST", "JFT", "MMLU", "C4", "HellaSwag", "LAMBADA",
                "TriviaQA", "MNLI", "SST", "VTAB", "WikiText", "PTB", "BookCorpus", "Wikipedia", "HBM", "SRAM",
                "DRAM", "NVIDIA", "Nvidia"}
# accelerators by kind or model (GPUs, TPUv4, A100s, V100), FLOP counts and bytes (TFLOPs, GiB), versions
SHARED_FORMS = re.compile(r"(?:GPU|TPU|CPU)(?:v?\d+)?s?|[AHVPK]\d{2,3}s?|[KMGTPE]?FLOP[Ss]?|[KMGTPE]i?B|v\d+(?:\.\d+)*")
MAX_EARLIER = 3  # questions read back at most: a chain of follow-ups rarely runs longer


def content_text(content) -> str | None:
    """A chat message's text: a string, or the text parts of a list of parts ({"type": "text",
    "text": ...}, as OpenAI clients and Gradio's chatbot send them); None when it is neither."""
    if isinstance(content, list):
        if not all(isinstance(p, dict) for p in content):
            return None
        return " ".join(p["text"] for p in content if p.get("type", "text") == "text" and isinstance(p.get("text"), str))
    return content if isinstance(content, str) else None


def names_something(question: str) -> bool:
    """Whether the question names a method, model or paper of its own."""
    words = (m.group(0).split("-")[0] for m in NAME.finditer(question))
    return any(w not in NOT_NAMES and w not in SHARED_TERMS and not SHARED_FORMS.fullmatch(w) for w in words)


def follows_on(question: str) -> bool:
    """Whether the question leans on an earlier one: it begins as a follow-up does ("and ...",
    "what about ...") or refers back ("it", "the paper") before it names anything itself."""
    if FOLLOW_LEADS.match(question):
        return True
    back = REFERS_BACK.search(question)
    # "How does it compare with ResNet?" refers back before it names; in "How is BERT trained, and
    # what is its loss?" the name comes first and "its" is BERT
    return back is not None and not names_something(question[:back.start()])


def searched_text(question: str, context: list[str]) -> str:
    """What a question is searched for, and its excerpts centred on: the earlier questions it leans
    on, then its own words."""
    return " ".join([*context, question])


def context_for(question: str, earlier: list[str]) -> list[str]:
    """The earlier questions (oldest first) that `question` follows on from: back to the last one
    that stands alone, at most MAX_EARLIER; none when it stands alone itself."""
    if not follows_on(question):
        return []
    context: list[str] = []
    for before in reversed([q.strip() for q in earlier if q and q.strip()]):
        context.insert(0, before)
        if len(context) == MAX_EARLIER or not follows_on(before):
            break
    return context
