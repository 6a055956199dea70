"""The offline analyzer: an `Analysis` without a model.

Sentiment is VADER's compound score (the `vadersentiment` package, whose
lexicon ships inside the wheel: nothing is downloaded). On a labelled set of
learner sentences (tests/llm/data/sentiment_gold.jsonl) it beats the word
lists this module used before; tests/llm/test_sentiment_gold.py holds the
comparison. Topics come from keywords mapped to twelve topics.
"""

from __future__ import annotations

import functools
import math
import re

import msgspec
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from llm.analysis import MAX_UTTERANCE_CHARS, Analysis, canonical

# Names the method: change it whenever the analysis does.
OFFLINE_MODEL = "offline-vader-v1"

_TOPIC_KEYWORDS: dict[str, str] = {
    keyword: topic
    for topic, keywords in {
        "travel": """travel travelled traveled trip flight plane airport hotel vacation
            holiday beach passport train tourist visit journey abroad luggage ticket""",
        "food": """food eat ate eating cook cooking cooked dinner lunch breakfast restaurant
            pizza pasta rice bread coffee tea delicious meal fruit vegetable hungry
            kitchen recipe""",
        "work": """work working worked job office boss colleague meeting project salary
            career company manager interview deadline business""",
        "family": """family mother father mom mum dad parent brother sister son daughter
            grandmother grandfather grandma grandpa wife husband child children kid
            baby cousin aunt uncle""",
        "school": """school class classmate teacher student homework exam university
            college lesson study studying grammar course learn learning vocabulary""",
        "health": """health healthy doctor hospital sick ill medicine pain headache sleep
            tired fever dentist diet flu""",
        "shopping": """shopping shop store buy bought mall price cheap expensive market
            clothes sale money pay paid""",
        "weather": """weather rain raining rainy sunny sun snow snowing cold hot warm wind
            windy cloudy storm temperature""",
        "hobbies": """hobby hobbies reading book painting drawing garden gardening guitar
            piano photography chess dance dancing hiking fishing knitting""",
        "technology": """computer phone smartphone internet app software laptop email
            online website technology programming robot""",
        "sports": """sport football soccer basketball tennis swim swimming running gym
            team match exercise yoga bike cycling""",
        "entertainment": """movie film music song concert tv television series netflix
            show theater theatre band singer""",
    }.items()
    for keyword in keywords.split()
}
_GENERAL_TOPIC = "general"

_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")


@functools.cache
def _vader() -> SentimentIntensityAnalyzer:
    # Reads its lexicon files once (~40 ms); scoring only reads them after,
    # so one instance serves every analyzer and thread.
    return SentimentIntensityAnalyzer()


class _Evidence(msgspec.Struct):
    # Words in VADER's lexicon, with their valence there (-4..4).
    sentiment: dict[str, float] = msgspec.field(default_factory=dict)
    topics: dict[str, list[str]] = msgspec.field(default_factory=dict)
    matched: int = 0


class OfflineAnalyzer:
    """A deterministic analysis for when no model is set up.

    Sentiment: VADER's compound score in [-1, 1], from its lexicon with its
    rules for negation ("not good"), "but", boosters ("very"), capitals and
    exclamation marks. Only the first MAX_UTTERANCE_CHARS characters are
    read, as a model would be sent: VADER's time grows faster than linearly.
    Topics: keywords mapped to twelve topics, most-mentioned first,
    "general" when none match. Confidence grows with the number of matched
    words (sentiment or topic) and stays below 0.9: word lists never know
    as much as a model.
    """

    model = OFFLINE_MODEL

    def analyze(self, text: str) -> Analysis:
        text = text[:MAX_UTTERANCE_CHARS].replace("\u2019", "'")
        score = round(_vader().polarity_scores(text)["compound"], 3)
        evidence = _evidence(text)
        ranked = sorted(evidence.topics, key=lambda topic: -len(evidence.topics[topic]))
        return canonical(
            Analysis(
                sentiment=score,
                topics=ranked or [_GENERAL_TOPIC],
                confidence=round(0.2 + 0.7 * (1 - math.exp(-evidence.matched / 3)), 3),
                reasoning=_reasoning(score, evidence),
            )
        )


def _evidence(text: str) -> _Evidence:
    evidence = _Evidence()
    lexicon = _vader().lexicon
    for word in _WORD.findall(text.lower()):
        valence = lexicon.get(word)
        # Plurals ("flights", "movies") map through their singular.
        topic = _TOPIC_KEYWORDS.get(word) or _TOPIC_KEYWORDS.get(word.removesuffix("s"))
        if valence is not None:
            evidence.sentiment[word] = valence
        if topic is not None:
            evidence.topics.setdefault(topic, []).append(word)
        evidence.matched += valence is not None or topic is not None
    return evidence


def _reasoning(score: float, evidence: _Evidence) -> str:
    count = evidence.matched
    parts = [f"Offline analysis of {count} matched word{'' if count == 1 else 's'}."]
    if evidence.sentiment:
        words = ", ".join(
            f"'{word}' ({valence:+g})" for word, valence in evidence.sentiment.items()
        )
        parts.append(f"VADER sentiment {score:+g}; its lexicon words: {words}.")
    elif score:
        parts.append(f"VADER sentiment {score:+g}, from symbols such as emoji or emoticons.")
    else:
        parts.append("No sentiment words, so neutral.")
    if evidence.topics:
        topics = "; ".join(
            f"{topic} ({_quoted(words)})" for topic, words in evidence.topics.items()
        )
        parts.append(f"Topics from keywords: {topics}.")
    else:
        parts.append(f"No topic keywords, so {_GENERAL_TOPIC!r}.")
    return " ".join(parts)


def _quoted(words: list[str]) -> str:
    return ", ".join(f"'{word}'" for word in dict.fromkeys(words))
