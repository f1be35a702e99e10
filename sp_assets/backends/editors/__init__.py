"""Editors: apply an instruction to an image and bring the result back to the source size."""
