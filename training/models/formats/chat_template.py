"""The chat template a text artifact carries: how a list of messages becomes one prompt.

Hugging Face's convention (a Jinja template over `messages` and `add_generation_prompt`,
saved beside the tokenizer as `chat_template.jinja`), so a template written for a
Hugging Face tokenizer works here, and the server's Messages API (OpenAI's chat
completions, as text-generation-inference offers it) renders the conversation the way the
model was trained to read it. A model trained on plain text gets a plain default: one
line per message, `role: content`, then `assistant:` for the model to continue. Edit the
file in an artifact to change it (and its checksum in genkiln.json), or ship a model
trained on chat transcripts with its own.
"""

from __future__ import annotations

from pathlib import Path

CHAT_TEMPLATE_FILE = "chat_template.jinja"

DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ message['role'] }}: {{ message['content'] }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


def write_chat_template(directory: Path, template: str = DEFAULT_CHAT_TEMPLATE) -> Path:
    path = Path(directory) / CHAT_TEMPLATE_FILE
    path.write_text(template, encoding="utf-8")
    return path
