"""lmms-eval integration: the ``videopanda`` model (``lmms-eval --model videopanda``) and our QA tasks.

``manifest`` is what the ``lmms_eval.models`` entry point names; ``model`` needs
lmms-eval installed (``pip install "videopanda[lmms]"``); ``qa_task`` (the task
functions) and ``tasks_dir`` (``videopanda eval lmms-tasks``) need only videopanda.
"""
