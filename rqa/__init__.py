"""rqa: answers technical AI-research questions from a corpus of papers."""
