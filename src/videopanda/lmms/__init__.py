"""lmms-eval integration: the ``videopanda`` model (``lmms-eval --model videopanda``) and our QA tasks.

``manifest`` is what the ``lmms_eval.models`` entry point names; ``model`` needs
lmms-eval installed (``pip install "videopanda[lmms]"``), ``visuals`` (what a task's
``doc_to_visual`` hands over -> model input) and ``likelihood`` (option scoring in
lmms-eval's convention) do not; ``run_check`` (``videopanda eval lmms``) runs lmms-eval's
CLI as a subprocess and tells a failed run; ``qa_task`` (the task functions) and
``tasks_dir`` (``videopanda eval lmms-tasks``) need only videopanda.
"""
