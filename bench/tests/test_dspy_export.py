"""DSPy loads what `promptopt models export --format dspy` writes.

The fixture is written by the Rust test `export::tests::the_dspy_fixture_is_current` in
`crates/promptopt-registry` (rewrite it with `PROMPTOPT_UPDATE_FIXTURES=1`): a two-stage
program, `evidence` (chain of thought, `question, context -> evidence`) then `answer` (predict,
`question, evidence -> answer`), with one demo each.
"""

import json
import logging
import warnings
from pathlib import Path

import dspy

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "crates" / "promptopt-registry" / "tests" / "fixtures" / "two_stage.dspy.json"

EVIDENCE_INSTRUCTIONS = "Quote the sentences of the context that answer the question."
ANSWER_INSTRUCTIONS = "Answer the question in a few words, using only the evidence."
EVIDENCE_DEMO = {
    "question": "What is the capital of France?",
    "context": "France is in Europe.\nIts capital is Paris.",
    "reasoning": "The second sentence names the capital.",
    "evidence": "Its capital is Paris.",
}
ANSWER_DEMO = {
    "question": "Who wrote Hamlet?",
    "evidence": "Hamlet is a tragedy by William Shakespeare.",
    "answer": "William Shakespeare",
}


class TwoStage(dspy.Module):
    def __init__(self):
        super().__init__()
        self.evidence = dspy.ChainOfThought("question, context -> evidence")
        self.answer = dspy.Predict("question, evidence -> answer")

    def forward(self, question, context):
        evidence = self.evidence(question=question, context=context).evidence
        return self.answer(question=question, evidence=evidence)


class Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.records = []

    def emit(self, record):
        self.records.append(record)


def load_fixture() -> tuple[TwoStage, list[logging.LogRecord]]:
    program = TwoStage()
    handler = Records()
    logger = logging.getLogger("dspy")
    logger.addHandler(handler)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            program.load(str(FIXTURE))
    finally:
        logger.removeHandler(handler)
    return program, handler.records


def test_dspy_loads_the_export_without_warnings():
    assert dspy.__version__ == "3.4.1"
    _, records = load_fixture()
    assert [r.getMessage() for r in records] == []


def test_the_export_names_the_predictors_as_dspy_does():
    program = TwoStage()
    assert [name for name, _ in program.named_parameters()] == ["evidence.predict", "answer"]


def test_instructions_and_demos_reach_both_predictors():
    program, _ = load_fixture()
    evidence, answer = program.evidence.predict, program.answer
    assert evidence.signature.instructions == EVIDENCE_INSTRUCTIONS
    assert answer.signature.instructions == ANSWER_INSTRUCTIONS
    assert evidence.demos == [EVIDENCE_DEMO]
    assert answer.demos == [ANSWER_DEMO]
    assert list(evidence.signature.fields) == ["question", "context", "reasoning", "evidence"]
    prefixes = [f.json_schema_extra["prefix"] for f in evidence.signature.fields.values()]
    assert prefixes == ["Question:", "Context:", "Reasoning:", "Evidence:"]


def test_dspy_saves_the_loaded_program_as_the_export():
    program, _ = load_fixture()
    exported = json.loads(FIXTURE.read_text())
    state = program.dump_state()
    assert set(state) == {"evidence.predict", "answer"}
    for key, predictor in state.items():
        assert predictor == exported[key], key


def test_the_chat_adapter_formats_the_loaded_demos():
    program, _ = load_fixture()
    messages = dspy.ChatAdapter().format(
        program.answer.signature, program.answer.demos, {"question": "Who wrote Faust?", "evidence": "Goethe did."}
    )
    text = "\n".join(m["content"] for m in messages)
    assert ANSWER_INSTRUCTIONS in text
    assert "William Shakespeare" in text
    assert "Who wrote Faust?" in text
