"""Prompt learners LLaMP is compared with, each built in the shared frame (``llamp.prompt_learner``), on the
shared class-prompt layout (``llamp.class_prompts``) and prompted CLIP towers (``llamp.prompted_clip``);
each module holds only what is new in its method."""
