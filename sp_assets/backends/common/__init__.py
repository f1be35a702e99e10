"""Helpers the backend families share: Hugging Face loading, package versions, judge-answer parsing, fonts, the VLM runner."""
