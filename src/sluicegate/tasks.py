"""Task routing: a request names (or is given) a task, and the task's model list is its chain.

Config::

    tasks:                       # task → ordered models: the first, then its fallbacks
      code: [openai/gpt-4.1, local/gemma-3-270m]
      vision: [openai/gpt-4o-mini]
      text: [local/gemma-3-270m]
    task_inference:
      long_context_tokens: 8000  # estimated prompt tokens above which → long_context
      code_line_ratio: 0.4       # share of code-like lines above which → code

A request picks its task explicitly with a ``task`` field (``"task": "code"``) or with the model
name ``task/<name>`` (``"model": "task/code"``); the reason is then ``explicit``. The model names
``task/auto`` and ``auto`` (when no alias or deployment claims it) infer the task from the
request, first rule that matches:

1. ``vision``: a message content part of type ``image_url``, ``image`` or ``input_image``.
2. ``audio``: a content part of type ``input_audio`` (``audio_transcription`` when no ``audio``
   task is configured).
3. ``long_context``: the prompt's characters (every message's text) / 4 > ``long_context_tokens``.
4. ``code``: the last user message has a fenced block (a line starting with three backticks),
   or it has at least 3 non-empty lines and more than ``code_line_ratio`` of them look like code
   (end in ``;``, ``{``, ``}``, ``)`` or ``:``, or start with ``def``, ``class``, ``import``,
   ``from``, ``return``, ``function``, ``const``, ``let``, ``var``, ``#include``, ``public``,
   ``fn``, ``func``, ``package``, ``SELECT``).
5. ``text`` otherwise.

An inferred task that is not configured falls back to ``text`` (reason ``<task>-not-configured``);
an explicit task that is not configured is a 400. The response headers ``X-Sluicegate-Task`` and
``X-Sluicegate-Task-Reason`` (``explicit``, ``image-part``, ``audio-part``, ``long-prompt``,
``code-fence``, ``code-lines``, ``default``) say which and why. The ``task`` field is the
gateway's own and never reaches an upstream.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import InvalidRequestError

__all__ = ["BUILTIN_TASKS", "TASK_PREFIX", "TaskChoice", "choose_task", "infer_task"]

TASK_PREFIX = "task/"
BUILTIN_TASKS = ("text", "code", "vision", "audio", "audio_transcription", "reasoning",
                 "long_context")
AUTO_MODELS = frozenset({"auto", "task/auto"})
_IMAGE_PARTS = frozenset({"image_url", "image", "input_image"})
_AUDIO_PARTS = frozenset({"input_audio"})
_CODE_START = re.compile(
    r"^(def |class |import |from \S+ import|return\b|function\b|const |let |var |#include|"
    r"public |fn |func |package |SELECT )")
_CODE_END = (";", "{", "}", ")", ":")


@dataclass(frozen=True, slots=True)
class TaskChoice:
    """The task of a request, why it was chosen, and its models (the chain, in order)."""

    task: str
    reason: str
    models: tuple[str, ...]

    def headers(self) -> dict[str, str]:
        return {"X-Sluicegate-Task": self.task, "X-Sluicegate-Task-Reason": self.reason}


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p.get("text") or "" for p in content
                         if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def _part_types(messages: list[Any]) -> set[str]:
    types: set[str] = set()
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            types.update(str(p.get("type")) for p in content if isinstance(p, dict))
    return types


def code_heavy(text: str, ratio: float) -> str | None:
    """``code-fence``, ``code-lines`` or None (rule 4 of the module docstring)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if any(line.startswith("```") for line in lines):
        return "code-fence"
    if len(lines) < 3:
        return None
    code = sum(1 for line in lines if line.endswith(_CODE_END) or _CODE_START.match(line))
    return "code-lines" if code / len(lines) > ratio else None


def infer_task(raw: Mapping[str, Any], *, long_context_tokens: int, code_line_ratio: float,
               configured: Mapping[str, Any]) -> tuple[str, str]:
    """The task a request body implies and the reason (the rules of the module docstring)."""
    messages = raw.get("messages")
    if not isinstance(messages, list):
        prompt = raw.get("prompt")
        texts = [prompt] if isinstance(prompt, str) else [
            p for p in (prompt or []) if isinstance(p, str)]
        messages = [{"role": "user", "content": t} for t in texts]
    types = _part_types(messages)
    if types & _IMAGE_PARTS:
        return "vision", "image-part"
    if types & _AUDIO_PARTS:
        return ("audio" if "audio" in configured else "audio_transcription"), "audio-part"
    texts = [_text_of(m.get("content")) for m in messages if isinstance(m, dict)]
    if sum(len(t) for t in texts) / 4 > long_context_tokens:
        return "long_context", "long-prompt"
    last_user = next((_text_of(m.get("content")) for m in reversed(messages)
                      if isinstance(m, dict) and m.get("role") == "user"), "")
    if (why := code_heavy(last_user, code_line_ratio)) is not None:
        return "code", why
    return "text", "default"


def choose_task(raw: dict[str, Any], model: str, tasks: Mapping[str, list[str]], *,
                auto_claimed: bool, long_context_tokens: int = 8000,
                code_line_ratio: float = 0.4) -> TaskChoice | None:
    """The request's task, or None when it routes by model name as usual. ``auto_claimed``:
    an alias or deployment is named ``auto`` (then only ``task/auto`` infers). Raises
    ``InvalidRequestError`` for an explicit task that is not configured."""
    asked = raw.get("task")
    if asked is not None and not isinstance(asked, str):
        raise InvalidRequestError("'task' must be a string.", param="task")
    if asked is None and model.startswith(TASK_PREFIX) and model not in AUTO_MODELS:
        asked = model[len(TASK_PREFIX):]
    if asked is not None and asked != "auto":
        if asked not in tasks:
            raise InvalidRequestError(
                f"Unknown task '{asked}': configured tasks are "
                f"{', '.join(sorted(tasks)) or 'none'}.", param="task")
        return TaskChoice(asked, "explicit", tuple(tasks[asked]))
    if asked != "auto" and (model not in AUTO_MODELS or (model == "auto" and auto_claimed)):
        return None
    if not tasks:
        raise InvalidRequestError("Task routing needs a 'tasks' section in the config.",
                                  param="model")
    task, reason = infer_task(raw, long_context_tokens=long_context_tokens,
                              code_line_ratio=code_line_ratio, configured=tasks)
    if task not in tasks:
        if "text" not in tasks:
            raise InvalidRequestError(
                f"The request implies the task '{task}' ({reason}), which is not configured, "
                "and no 'text' task is.", param="model")
        task, reason = "text", f"{task}-not-configured"
    return TaskChoice(task, reason, tuple(tasks[task]))
