"""A request's prompt on its way into the model: its token ids.

`encode_prompt` runs on a worker thread when the request is accepted, so a prompt that
does not fit is refused before the stream starts; the scheduler thread prefills it
(`generator.decode.decoder.Decoder.prefill`) when the row joins the batch.
"""

from __future__ import annotations

from jinja2 import TemplateError

from generator.weights.loaded import LoadedModel
from streamkit.errors import InvalidRequest
from streamkit.generation import GenerationParams, Message

# How turns are written for a model without a chat template (GPT-2 and other base
# models): "Role: text" paragraphs, ending with the assistant's cue.
PLAIN_ROLES = {"system": "System", "user": "User", "assistant": "Assistant"}


def render_plain(messages: list[Message]) -> str:
    turns = [f"{PLAIN_ROLES[message.role]}: {message.content}" for message in messages]
    return "\n\n".join([*turns, f"{PLAIN_ROLES['assistant']}:"])


def encode_prompt(lm: LoadedModel, request: GenerationParams, max_new_tokens: int) -> list[int]:
    """The request's text → token ids; checks the context fits.

    A conversation (`messages`), or a `prompt` with `chat`, is rendered with the model's
    own chat template, ending with the cue for the assistant's answer; a model without a
    template gets `render_plain`. A plain `prompt` is tokenized as it is."""
    tokenizer = lm.tokenizer
    field = "max_new_tokens"
    if request.messages is not None or request.chat:
        if request.messages is not None:
            messages, field = request.messages, "messages"
        else:
            messages = [Message(role="user", content=request.prompt or "")]
        if tokenizer.chat_template:
            turns = [message.model_dump() for message in messages]
            try:
                text = tokenizer.apply_chat_template(
                    turns, add_generation_prompt=True, tokenize=False
                )
            except TemplateError as exc:
                # Some templates refuse an order of turns (a second system turn, two
                # user turns in a row): the model's own rule, said in its own words.
                raise InvalidRequest(
                    "messages", f"the model's chat template refuses this conversation: {exc}"
                ) from None
        else:
            text = render_plain(messages)
        # The template writes the special tokens itself.
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    else:
        ids = tokenizer(request.prompt)["input_ids"]
    if not ids:
        # Characters the vocabulary has no token for (some control bytes) encode to
        # nothing, and a model cannot continue from nothing.
        raise InvalidRequest(
            "prompt",
            "the prompt encodes to no tokens: it holds only characters the model's "
            "vocabulary cannot represent",
        )
    if len(ids) + max_new_tokens > lm.context_length:
        what = "the conversation" if field == "messages" else "prompt"
        raise InvalidRequest(
            field,
            f"{what} ({len(ids)} tokens) plus max_new_tokens ({max_new_tokens}) exceeds the "
            f"model's context of {lm.context_length} tokens",
        )
    return [int(i) for i in ids]
