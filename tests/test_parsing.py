"""Answer parsing on realistic model replies: yes/no/maybe, A-D MCQ, Yes/No binary, custom labels."""

import time

import pytest

from core.parsing import parse_answer
from core.tasks import Example, Task

YNM = ["yes", "no", "maybe"]
MCQ = ["A", "B", "C", "D"]
BIN = ["No", "Yes"]
SENT = ["positive", "negative", "neutral"]
OPTIONS = {
    "A": "Inhibition of proteasome",
    "B": "Hyperstabilization of microtubules",
    "C": "Generation of free radicals",
    "D": "Cross-linking of DNA",
}
LONG_COT = (
    "Let's think step by step. The study enrolled 120 patients and compared two arms. "
    "The primary outcome was not significantly different (p=0.21), and the authors note no "
    "difference in secondary outcomes either. " * 40
)
VIGNETTE = (
    "A 67-year-old man with transitional cell carcinoma of the bladder presents with tinnitus. "
    "A drug that causes ototoxicity and nephrotoxicity is cisplatin. " * 30
)

YES_NO_MAYBE_CASES = [
    ("yes", "yes"),
    ("Yes.", "yes"),
    ("NO", "no"),
    ("maybe", "maybe"),
    ("Maybe, given the data.", "maybe"),
    ("No, the study does not support this.", "no"),
    ("Answer: yes", "yes"),
    ("Answer: No", "no"),
    ("**Answer:** maybe", "maybe"),
    ("**Answer**: yes", "yes"),
    ("Final answer: no", "no"),
    ("The answer is yes.", "yes"),
    ("The results show a significant association.\n\nAnswer: yes  \n", "yes"),
    ("<answer>no</answer>", "no"),
    ("I first thought yes, but looking at the data again.\n<answer>maybe</answer>", "maybe"),
    ("Answer: yes\nWait, re-reading the abstract, the effect was not significant.\nFinal answer: no", "no"),
    ("The answer is yes. Final answer: no", "no"),
    ("Not sure.", None),
    ("I don't know.", None),
    ("There is nothing conclusive here.", None),
    ("yes or no, hard to say", None),
    ("", None),
    ("   \n  ", None),
    ("I'm sorry, but I can't help with that request.", None),
    ('Answer: <yes|no|maybe>', None),
    ("The authors conclude that the intervention reduced mortality.\n\nTherefore, yes.", "yes"),
    ("Based on the evidence, the answer is most likely no.", "no"),
    ("The data are mixed and underpowered.\n\n**Maybe**", "maybe"),
    ("Yes.\n\nExplanation: the randomized trial showed a 30% reduction in events, which was significant.", "yes"),
    (LONG_COT + "\n\nAnswer: no", "no"),
    (LONG_COT, None),
    ("Answer:\nyes", "yes"),
    ("Final decision: maybe", "maybe"),
    ("I know the answer: no.", "no"),
    ("Answer: Yes, mitochondria play a role in remodelling.", "yes"),
    ("The evidence is suggestive but not definitive, so maybe.", "maybe"),
    ("Answer: not yes", None),
]

MCQ_CASES = [
    ("A", "A"),
    ("B.", "B"),
    ("B)", "B"),
    ("(B)", "B"),
    ("**B**", "B"),
    ("Option B", "B"),
    ("option (C)", "C"),
    ("Answer: D", "D"),
    ("Answer: d", "D"),
    ("**Answer:** C", "C"),
    ("Answer: (A)", "A"),
    ("The answer is (C) Generation of free radicals", "C"),
    ("The correct answer is B. Hyperstabilization of microtubules.", "B"),
    ("Answer: Cross-linking of DNA", "D"),
    ("<answer>A</answer>", "A"),
    ("\\boxed{D}", "D"),
    ("Final Answer: $\\boxed{\\text{C}}$", "C"),
    ("A 45-year-old man presents with fever and a rash.", None),
    ("This is a classic case of cisplatin toxicity.", None),
    ("The answer is a bit unclear from the vignette.", None),
    (VIGNETTE + "\n\nAnswer: D", "D"),
    (VIGNETTE, None),
    (
        "Let's analyze each option:\nA. Inhibition of proteasome - bortezomib, not this drug.\n"
        "B. Hyperstabilization of microtubules - paclitaxel.\nC. Generation of free radicals - bleomycin.\n"
        "D. Cross-linking of DNA - cisplatin, which is ototoxic.\n\nTherefore, the answer is D.",
        "D",
    ),
    ("Option A is tempting, but option C fits better. Final answer: C", "C"),
    ("I'd go with B because it fits the timeline.", "B"),
    ("Answer: A or C", None),
    ("A, B and C are all incorrect here.", None),
    ("I cannot answer medical questions. Please consult a physician.", None),
    ("D. Cross-linking of DNA", "D"),
    ("The most appropriate next step is (C).", "C"),
    ("The answer is C.\n\nExplanation: cisplatin cross-links DNA... wait, that is D. Answer: D", "D"),
    ("Answer: B\n", "B"),
    ("  \n**Final answer: (B) Hyperstabilization of microtubules**  \n", "B"),
    ("Answer: Option D", "D"),
    ("After weighing the options, I choose A.", "A"),
    ("", None),
]

BINARY_CASES = [
    ("Yes", "Yes"),
    ("yes", "Yes"),
    ("No.", "No"),
    ("NO", "No"),
    ("Answer: Yes", "Yes"),
    ("Answer: no", "No"),
    ("**Answer:** No", "No"),
    ("Label: Yes", "Yes"),
    ("Final answer: **Yes**", "Yes"),
    ("<answer>No</answer>", "No"),
    ("<ANSWER> yes </ANSWER>", "Yes"),
    ("The statement exaggerates the numbers considerably.\n\nAnswer: Yes", "Yes"),
    ("The claim is accurate according to official data, so this is not a lie.\n\nAnswer: No", "No"),
    ("Not a lie.", None),
    ("Not sure.", None),
    ("Yes or No? It is hard to tell from the context.", None),
    ("I'm unable to verify this statement.", None),
    ("", None),
    ("Answer: Yes\n\nOn second thought, the figures check out.\nFinal answer: No", "No"),
    ("The speaker's claim contradicts the record, so Yes.", "Yes"),
    ("Yes, the statement is false.", "Yes"),
    ("No, the statement is accurate.", "No"),
    ("No one can know for sure.", None),
    ("Nobody knows.", None),
    ("I know this one: Yes", "Yes"),
    ("The answer is yes.", "Yes"),
    ("The answer would be No.", "No"),
    ("Answer: <No|Yes>", None),
    ("  yes  \n\n", "Yes"),
    ("**Yes**", "Yes"),
    ("Prediction: No", "No"),
    ("Verdict - Yes", "Yes"),
    ("Yes.\n\nThe statement misrepresents the voting record of the senator, who actually supported the bill twice.",
     "Yes"),
]

SENTIMENT_CASES = [
    ("positive", "positive"),
    ("Positive.", "positive"),
    ("NEGATIVE", "negative"),
    ("Neutral", "neutral"),
    ("Sentiment: positive", "positive"),
    ("Answer: negative", "negative"),
    ("**Answer:** Neutral", "neutral"),
    ("<answer>positive</answer>", "positive"),
    ("The review praises the battery but complains about the screen.\n\nAnswer: neutral", "neutral"),
    ("The tone is not negative, it's positive.", "positive"),
    ("It's somewhere between positive and negative.", None),
    ("Positive or negative? Hard to say.", None),
    ("I cannot determine the sentiment.", None),
    ("", None),
    ("The customer is clearly upset about the delay.\nFinal answer: negative", "negative"),
    ("Answer: positive\nActually, the sarcasm makes it negative.\nAnswer: negative", "negative"),
    ("Classification: neutral", "neutral"),
    ("The label is positive.", "positive"),
    ("I would classify this as positive.", "positive"),
    ("The answer is negative.", "negative"),
    ("Overall: negative", "negative"),
    ("**Negative**", "negative"),
    ("(positive)", "positive"),
    ("Neutral - the text just states facts.", "neutral"),
    ("Positivity is high here.", None),
    ("Answer: <positive|negative|neutral>", None),
    ("The reviewer loved it!\n\nTherefore, positive.", "positive"),
    ("  negative  ", "negative"),
    ("answer: POSITIVE", "positive"),
    ("My prediction: neutral", "neutral"),
    ("The sentiment is mostly negative.", "negative"),
]


@pytest.mark.parametrize("reply, expected", YES_NO_MAYBE_CASES)
def test_yes_no_maybe(reply, expected):
    assert parse_answer(reply, YNM) == expected


@pytest.mark.parametrize("reply, expected", MCQ_CASES)
def test_mcq(reply, expected):
    assert parse_answer(reply, MCQ, OPTIONS) == expected


@pytest.mark.parametrize("reply, expected", BINARY_CASES)
def test_binary(reply, expected):
    assert parse_answer(reply, BIN) == expected


@pytest.mark.parametrize("reply, expected", SENTIMENT_CASES)
def test_custom_labels(reply, expected):
    assert parse_answer(reply, SENT) == expected


@pytest.mark.parametrize(
    "reply, expected",
    [
        ("Answer: Cross-linking of DNA", None),  # option text needs the choices
        ("D. Cross-linking of DNA", "D"),  # short line after the letter is fine without choices
        ("A 45-year-old man presents with fever.", None),
        ("Answer: B", "B"),
    ],
)
def test_mcq_without_choices(reply, expected):
    assert parse_answer(reply, MCQ) == expected


@pytest.mark.parametrize(
    "reply, expected",
    [
        ("A. Generation of free radicals", None),  # letter and option text disagree
        ("A. Inhibition of proteasome", "A"),
        ("Answer: generation of free radicals.", "C"),
    ],
)
def test_mcq_letter_must_match_option_text_on_last_line(reply, expected):
    assert parse_answer(reply, MCQ, OPTIONS) == expected


def test_labels_returned_as_spelled():
    assert parse_answer("answer: YES", ["Yes", "No"]) == "Yes"
    assert parse_answer("answer: b", ["a", "b"]) == "b"
    assert parse_answer("Answer: very positive", ["positive", "very positive"]) == "very positive"
    assert parse_answer("Answer: half-true", ["true", "half-true", "false"]) == "half-true"


def test_task_parse_uses_example_choices():
    ex = Example(id="1", inputs={"question": "q"}, label="D", choices=OPTIONS)
    task = Task("t", "t", "d", MCQ, "{question}\n{options}", {"train": [ex], "val": [], "test": []})
    assert task.parse("Answer: Cross-linking of DNA", ex) == "D"
    assert task.parse("Answer: Cross-linking of DNA") is None
    assert task.parse(None) is None


@pytest.mark.parametrize("labels", [YNM, MCQ, BIN, SENT])
def test_pathological_long_replies_are_fast(labels):
    nasty = [
        "Answer: " * 5000,
        "(" * 20000,
        "a " * 20000,
        "<answer>" * 3000,
        "yes no " * 5000 + "\n" * 3000,
        "\\boxed{" * 5000,
        "I " * 10000 + "choose",
    ]
    start = time.perf_counter()
    for reply in nasty:
        parse_answer(reply, labels)
    assert time.perf_counter() - start < 2.0
