"""The offline analyzer: VADER sentiment, keyword topics, confidence."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llm.analysis import MAX_REASONING_CHARS, MAX_UTTERANCE_CHARS, ParsedReply
from llm.offline import OFFLINE_MODEL, OfflineAnalyzer
from tests.llm.test_analysis import any_char, assert_canonical, unicode_heavy

offline = OfflineAnalyzer()


def test_offline_names_itself() -> None:
    assert offline.model == OFFLINE_MODEL == "offline-vader-v1"


def test_offline_is_deterministic() -> None:
    text = "I loved the trip to Rome, but the hotel was terrible and I was tired."
    assert offline.analyze(text) == offline.analyze(text)
    assert OfflineAnalyzer().analyze(text) == offline.analyze(text)


@pytest.mark.parametrize(
    ("text", "sign"),
    [
        ("I love my new job, my colleagues are great!", 1),
        ("This movie was boring and the ending was awful.", -1),
        ("The food was good.", 1),
        ("The food was not good.", -1),
        ("The food wasn't good.", -1),
        ("The food wasn\u2019t good.", -1),
        ("It was not a bad day.", 1),
        ("I don't hate it.", 1),
        ("I never feel happy at school.", -1),
        ("Not only that, the weather was lovely.", 1),
        ("Yesterday I goed to the market and it was very fun.", 1),
        ("I am very boring in this class, the teacher speak too slow.", -1),
        ("I went to the shop on Tuesday.", 0),
    ],
)
def test_offline_sentiment_and_negation(text: str, sign: int) -> None:
    sentiment = offline.analyze(text).sentiment
    assert math.copysign(1, sentiment) == sign if sign else sentiment == 0.0


def test_offline_negation_reaches_only_a_few_words() -> None:
    near = offline.analyze("It is not very good.").sentiment
    far = offline.analyze("It is not what I expected from a place this good.").sentiment
    assert near < 0 < far


def test_offline_more_agreeing_words_mean_stronger_sentiment() -> None:
    one = offline.analyze("It was good.").sentiment
    three = offline.analyze("It was good, nice and wonderful.").sentiment
    assert 0 < one < three < 1


def test_offline_what_follows_but_weighs_more() -> None:
    assert offline.analyze("The trip was great but the hotel was bad.").sentiment < 0
    assert offline.analyze("The hotel was bad but the trip was great.").sentiment > 0


def test_offline_emphasis_strengthens() -> None:
    plain = offline.analyze("I am happy").sentiment
    assert 0 < plain < offline.analyze("I am VERY happy!!!").sentiment


# An utterance about each topic ("general": about none of them).
TOPIC_EXAMPLES = {
    "travel": "Our flights to Spain were delayed at the airport.",
    "food": "We cooked pasta for dinner.",
    "work": "My boss moved the meeting again.",
    "family": "My sister and my parents visited.",
    "school": "The grammar exam at university was hard.",
    "health": "I had a headache so I saw a doctor.",
    "shopping": "I bought new clothes at the mall.",
    "weather": "It was rainy and windy all week.",
    "hobbies": "I play the guitar and love painting.",
    "technology": "My laptop and phone need new software.",
    "sports": "We watched the football match.",
    "entertainment": "We saw a movie and went to a concert.",
    "general": "Hmm, okay then.",
}


@pytest.mark.parametrize(("topic", "text"), TOPIC_EXAMPLES.items())
def test_offline_topics(topic: str, text: str) -> None:
    assert topic in offline.analyze(text).topics


def test_offline_topics_rank_by_mentions() -> None:
    text = "After work I cooked dinner: rice, bread and fruit for breakfast too."
    assert offline.analyze(text).topics[:2] == ["food", "work"]


def test_offline_confidence_grows_with_evidence() -> None:
    nothing = offline.analyze("We went there on Tuesday.").confidence
    little = offline.analyze("It was good.").confidence
    lots = offline.analyze("I love pizza, great pasta and delicious coffee at the restaurant.")
    assert 0 < nothing < little < lots.confidence < 0.9


def test_offline_reasoning_names_the_evidence() -> None:
    reasoning = offline.analyze("The food was not good but the hotel was great.").reasoning
    assert "'good' (+1.9)" in reasoning and "'great' (+3.1)" in reasoning
    assert "food ('food')" in reasoning and "travel ('hotel')" in reasoning


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("We went there on Tuesday.", "No sentiment words, so neutral."),
        ("\U0001f600", "from symbols such as emoji or emoticons"),
        ("Hmm.", "No topic keywords, so 'general'."),
    ],
)
def test_offline_reasoning_without_words(text: str, says: str) -> None:
    assert says in offline.analyze(text).reasoning


def test_offline_reads_what_a_model_would_be_sent() -> None:
    text = "a " * MAX_UTTERANCE_CHARS + "terrible awful horrible"
    analysis = offline.analyze(text)
    assert analysis.sentiment == 0.0
    assert len(analysis.reasoning) <= MAX_REASONING_CHARS


@unicode_heavy
@given(st.text(any_char, max_size=2000))
def test_offline_answers_are_canonical(text: str) -> None:
    analysis = offline.analyze(text)
    assert_canonical(ParsedReply(analysis, "strict"))
    assert analysis.topics
    assert 0.2 <= analysis.confidence < 0.9
