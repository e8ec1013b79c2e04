"""Judges of predicted answers: OpenAI-compatible endpoint, local chat model, rule-based match."""
