"""HTML and Markdown for the page: sources, checks, the annotator's item, names users chose.

Everything that comes from users or papers is escaped here. Plain text marks instead of emoji:
they render in every browser font, emoji often as boxes.
"""

from __future__ import annotations

import html
import json
import re

from rqa.answer import Answer, Citation, remove_links
from rqa.text import STOPWORDS

def mark_text(text: str, highlights: list[str], question: str) -> str:
    """The chunk's text, escaped, with the sentences that support the answer highlighted; before
    an answer exists, the question's words are."""
    escaped = html.escape(text)
    if highlights:
        for sentence in sorted(highlights, key=len, reverse=True):
            escaped = escaped.replace(html.escape(sentence), f'<mark class="rqa-support">{html.escape(sentence)}</mark>', 1)
        return escaped
    words = {w for w in re.findall(r"[A-Za-z0-9]{3,}", question.lower()) if w not in STOPWORDS}
    if not words:
        return escaped
    pattern = re.compile(r"\b(" + "|".join(sorted(map(re.escape, words), key=len, reverse=True)) + r")\w*", re.I)
    # matched in the text, escaped piece by piece: in the escaped text "amp" or "quot" would split an entity
    pieces, last = [], 0
    for m in pattern.finditer(text):
        pieces += [html.escape(text[last:m.start()]), f"<mark>{html.escape(m.group(0))}</mark>"]
        last = m.end()
    return "".join(pieces) + html.escape(text[last:])


def render_source(c: Citation, question: str) -> str:
    ch = c.hit.chunk
    link = f' · <a href="{c.arxiv_url}" target="_blank">arXiv:{ch.arxiv_id}</a>' if c.arxiv_url else ""
    origin = {"attributed": " · <i>cited by rqa (the model did not cite it)</i>",
              "named": " · <i>named by the model when asked after its answer</i>"}.get(c.origin, "")
    return (f'<div class="rqa-source" id="source-{c.n}"><b>[{c.n}] {html.escape(ch.title)}</b><br>'
            f'<small>{html.escape(ch.section)} · p. {ch.pages} · {html.escape(ch.paper)}{link}{origin}</small>'
            f'<p>{mark_text(ch.text, c.highlights, question)}</p></div>')


def render_retrieved(question: str, hits) -> str:
    """The sources as soon as retrieval ends, before the model has written anything."""
    if not hits:  # only an index without papers returns none
        return "<h4>Sources</h4>\n<p><i>The index holds no papers.</i></p>"
    parts = ["<h4>Sources (the model is reading them)</h4>"]
    parts += [render_source(Citation(n, h), question) for n, h in enumerate(hits, start=1)]
    return "\n".join(parts)


def render_sources(answer: Answer) -> str:
    parts = ["<h4>Cited sources</h4>"]
    parts += [render_source(c, answer.question) for c in answer.citations] or ["<p><i>The answer cites no source.</i></p>"]
    if answer.invalid_citations:
        parts.append(f'<p class="rqa-warning"><b>Warning:</b> citations to sources that do not exist: '
                     f'{", ".join(f"[{n}]" for n in answer.invalid_citations)}</p>')
    if answer.uncited:
        parts.append("<details><summary>Retrieved but not cited</summary>")
        parts += [render_source(c, answer.question) for c in answer.uncited]
        parts.append("</details>")
    return "\n".join(parts)


STATUS_MARK = {"matches source": "✓", "unverified": "?", "malformed": "✗"}


def render_checks(answer: Answer) -> str:
    lines = [f"**Model:** `{answer.model}`"]
    lines += [f"**Note:** {n}" for n in answer.notices]
    if answer.expansion:
        guess = remove_links(answer.expansion, [])[0]
        lines.append(f"**Searched with** the question and the passage the model expected to find (a guess that "
                     f"steers the search, not an answer): *{guess}*")
    attributed = [c.n for c in answer.citations if c.origin == "attributed"]
    if attributed:
        lines.append("**Citations added by rqa** (these sources hold sentences, or numbers, the model left uncited "
                     "or cited elsewhere): " + ", ".join(f"[{n}]" for n in attributed))
    if answer.support:
        unsupported = [s for s in answer.support if not s.supported]
        lines.append(f"**Support:** {len(answer.support) - len(unsupported)}/{len(answer.support)} sentences supported "
                     "by the retrieved sources.")
        lines += [f"- unsupported ({s.score:.2f}{', incomplete sentence' if not s.complete else ''}): {s.sentence}"
                  for s in unsupported]
    else:
        lines.append("**Support:** no complete sentence to check.")
    if answer.numbers:
        unsourced = [n for n in answer.numbers if not n.found]
        lines.append(f"**Numbers:** {len(answer.numbers) - len(unsourced)}/{len(answer.numbers)} found in the sources "
                     "their sentence cites.")
        lines += [f"- ✗ not in {', '.join(f'[{i}]' for i in n.sources) or 'any cited source'}: **{n.number}** "
                  f"in “{n.sentence}”" for n in unsourced]
    if answer.equations:
        lines.append("**Equations:**")
        lines += [f"- {STATUS_MARK[e.status]} {e.status}: `{e.latex}` {('— ' + e.detail) if e.detail else ''}"
                  for e in answer.equations]
    if answer.invalid_citations:
        lines.append("**Invalid citations:** " + ", ".join(f"[{n}]" for n in answer.invalid_citations))
    return "\n".join(lines)


def _stored_sources(text: str | None) -> list:
    """An item's sources as stored: a list, whatever an older import let in (shown, never fatal)."""
    try:
        sources = json.loads(text or "[]")
    except (ValueError, RecursionError):
        return [text]
    return sources if isinstance(sources, list) else [sources]


def _stored_source(s) -> str:
    """One stored source as an escaped list item; anything but a source object shown as its text."""
    e = html.escape
    if isinstance(s, dict) and ("title" in s or "text" in s):
        return (f"<li>[{e(str(s.get('n')))}] <b>{e(str(s.get('title')))}</b>, {e(str(s.get('section')))}, "
                f"p. {e(str(s.get('pages')))}: {e(str(s.get('text', ''))[:300])}</li>")
    return f"<li>{e(str(s)[:300])}</li>"


def render_item(row: dict | None) -> str:
    """The item as escaped text: question, answer and sources come from anonymous chat users
    and from uploaded papers, so nothing of theirs is rendered as Markdown or HTML (a planted
    image would be fetched by the annotator's browser, a planted link offered inside the rating view)."""
    if row is None:
        return "<p><i>Nothing left to rate. Thank you!</i></p>"
    e = html.escape
    src = "".join(_stored_source(s) for s in _stored_sources(row["sources"]))
    text = 'style="white-space: pre-wrap"'
    return (f"<p><b>Item {row['id']}</b> · model <code>{e(row['model'])}</code> · from {e(row['origin'])}</p>"
            f"<p><b>Question:</b></p><p {text}>{e(row['question'])}</p>"
            f"<p><b>Answer:</b></p><p {text}>{e(row['answer'])}</p>"
            f"<p><b>Sources:</b></p>" + (f"<ul>{src}</ul>" if src else "<p>(none)</p>"))


def md_literal(text: str) -> str:
    """Text that Markdown shows as written: every character but letters, digits, blanks, "-" and "_"
    as an HTML character reference, so that no image, link, autolink, table cell or emphasis can be
    made of it."""
    return "".join(c if c.isalnum() or c in " -_" else f"&#{ord(c)};" for c in text)


def ratings_table(summary: dict, feedback: dict) -> str:
    """The annotator tab's Markdown summary. Model names come from imported files: shown literally."""
    lines = [f"**{summary['ratings']} ratings.** Chat feedback: helpful {feedback['up']} · not helpful {feedback['down']}",
             "", "| model | ratings | mean depth | correct | partly | wrong |", "|---|---|---|---|---|---|"]
    lines += [f"| {md_literal(shown(m))} | {v['n']} | {v['mean_depth']:.2f} | {v['correct']} | {v['partly']} | {v['wrong']} |"
              for m, v in summary["models"].items()]
    alpha = summary["alpha"]
    lines.append(f"\nKrippendorff's alpha (ordinal, depth): {alpha if alpha is not None else 'n/a (needs two annotators on one item)'}")
    return "\n".join(lines)


# Bidirectional controls (U+202E RIGHT-TO-LEFT OVERRIDE...) make "report\u202Efdp.exe" show as
# "reportexe.pdf": in names that users chose, they are shown as escapes.
_BIDI = re.compile("[\u200e\u200f\u202a-\u202e\u2066-\u2069\u061c]")


def shown(name: str) -> str:
    return _BIDI.sub(lambda m: f"\\u{ord(m.group(0)):04x}", name)


def model_line(files) -> str:
    line = f"Model: `{files.q4.name}`" + (f" (reasoning questions: `{files.q8.name}`)" if files.q8 else "")
    if not files.adapter:
        return line + ", stock."
    scale = f" at scale {files.adapter_scale:g}" if files.adapter_scale != 1.0 else ""
    return line + f", fine-tuned by rqa: adapter `{files.adapter.name}`{scale}."
