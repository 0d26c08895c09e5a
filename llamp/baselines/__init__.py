"""Prompt learners LLaMP is compared with, built on the shared prompted CLIP towers
(``llamp.prompted_clip``); each module holds only what is new in its method."""
