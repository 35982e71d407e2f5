"""rqa: answers technical AI-research questions from a corpus of papers."""

__version__ = "0.1.0"
