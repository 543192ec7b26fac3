"""Evaluation: retrieval (BEIR layout) and the task runners built on it."""
