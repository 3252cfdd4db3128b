"""Explain mode (for a class): one or two plain sentences per panel, shown only while the sidebar's
"Explain" switch is on. Every text is here, keyed by panel; pages call `explain(key)` once per panel."""

from __future__ import annotations

import streamlit as st

ON = "explain_on"  # st.session_state: the switch, remembered for this browser session
_WIDGET = "explain_toggle"

TEXTS: dict[str, str] = {
    "loop": "Each step tries to improve one prompt: the model answers some questions, a second model reads the "
            "mistakes and suggests edits, and an edit is kept only if it does better on questions it never saw.",
    "versions": "A version is a prompt that passed the gate; its validation accuracy is measured on held-out "
                "questions, so it says how the prompt does on new questions, not on the ones it was tuned on.",
    "minibatch": "A minibatch is a small random sample of training questions. The current prompt answers them, "
                 "and only the wrong answers (the failures) are used to write the next edits.",
    "gradient": "A textual gradient is a critique written by the backward model: in words, why the prompt failed "
                "these questions. It plays the role a numeric gradient plays in training: a direction to change.",
    "candidate": "A candidate is a rewritten prompt that tries to fix what the gradient names. Several are made; "
                 "at most one becomes the next version, and only after it is scored on validation.",
    "bandit": "The bandit score is a candidate's accuracy on a few training questions, spent where it helps most "
              "(a multi-armed bandit). It ranks candidates cheaply; it is not the validation score.",
    "gate": "The gate scores the chosen prompt and the current one on the same validation questions and keeps "
            "the new one only if the policy says it is better. It stops lucky edits from piling up.",
    "mcnemar": "The McNemar p-value compares two prompts on the same questions, counting only the questions where "
               "they disagree. A small p (below 0.05) means the difference is unlikely to be luck.",
    "interval": "A 95% confidence interval is the range the true accuracy likely lies in, given how few questions "
                "were asked. With 20 questions it is wide: two prompts whose intervals overlap may be equally good.",
    "grid": "Each row is one validation question and each column a prompt: it shows which questions an edit "
            "fixed and which it broke, which a single accuracy number hides.",
    "lineage": "The lineage traces one step: the failed questions, the gradients written from them, the "
               "candidates those led to, and the decision. It answers \"where did this sentence come from?\".",
    "splits": "The questions are split three ways: training questions feed the minibatches, validation questions "
              "decide the gate, and test questions stay sealed for one honest score at the end.",
    "models": "The forward model answers the questions with the prompt being tuned; the backward model reads "
              "the wrong answers and writes the gradients and candidates. They can be the same model.",
    "method": "ProTeGi groups the errors, writes a gradient per group and lets a bandit pick among many "
              "candidates; TextGrad (AutoMedPrompt) writes feedback per question and one edit per step.",
    "cache": "Every model answer is saved under its exact request, so re-running a step or replaying a bundle "
             "costs nothing and gives the same text: that is how the demo plays back with no model at all.",
    "test": "The test split is sealed: it is never used for tuning, so scoring on it once, at the end, gives an "
            "honest estimate. Looking at it while still choosing prompts makes that estimate optimistic.",
}


def is_on() -> bool:
    return bool(st.session_state.get(ON, False))


def _remember() -> None:
    st.session_state[ON] = bool(st.session_state.get(_WIDGET))


def toggle() -> None:
    """The sidebar switch (off by default); its value outlives page switches in st.session_state[ON]."""
    if _WIDGET not in st.session_state:
        st.session_state[_WIDGET] = is_on()
    st.toggle("Explain", key=_WIDGET, on_change=_remember,
              help="add a plain sentence or two to each panel: what it shows and why it matters")


def explain(key: str) -> None:
    """The panel's explanation as a caption, only while explain mode is on."""
    if is_on():
        st.caption(":material/school: " + TEXTS[key])
