"""Talks to `promptopt serve-lm` (or the engine's server) with the official `openai` client.

usage: python openai_client.py BASE_URL MODEL
"""

import sys

import openai

base_url, model = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base_url, api_key="not-needed", max_retries=0)

models = [m.id for m in client.models.list().data]
assert model in models, models

messages = [
    {"role": "system", "content": "Classify the sentiment of the review as positive or negative."},
    {"role": "user", "content": "What a wonderful movie."},
    {"role": "assistant", "content": "positive"},
    {"role": "user", "content": "Boring and far too long."},
]
first = client.chat.completions.create(model=model, messages=messages, temperature=0, max_tokens=4)
assert first.choices[0].message.role == "assistant"
assert first.choices[0].message.content.strip(), first
assert first.choices[0].finish_reason in ("stop", "length"), first
assert first.usage.prompt_tokens > 0 and first.usage.completion_tokens > 0, first.usage

messages[-1] = {"role": "user", "content": "An absolute delight."}
second = client.chat.completions.create(model=model, messages=messages, temperature=0, max_tokens=4)
cached = second.usage.prompt_tokens_details.cached_tokens
assert cached > 0, second.usage

stopped = client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "Count from one to ten in words, separated by commas."}],
    temperature=0,
    max_tokens=32,
    stop=[","],
)
assert "," not in stopped.choices[0].message.content, stopped

try:
    client.chat.completions.create(model="local/no-such-model", messages=messages)
    raise AssertionError("an unknown model must be refused")
except openai.NotFoundError as error:
    assert error.status_code == 404

try:
    client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "word " * 5000}], max_tokens=4
    )
    raise AssertionError("an oversized prompt must be refused")
except openai.BadRequestError as error:
    assert error.code == "context_length_exceeded", error

print(f"ok: {first.choices[0].message.content!r} / {second.choices[0].message.content!r}, cached {cached}")
