"""Instruction writers: turn a judge's finding into edit instructions (and the control edit)."""
