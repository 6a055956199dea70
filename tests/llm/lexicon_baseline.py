"""The sentiment of the hand-written word lists that the offline analyzer used
until VADER replaced it (model "offline-lexicon-v1"), kept unchanged only as
the baseline of tests/llm/test_sentiment_gold.py.

Each positive or negative word counts ±1, flipped when a negator precedes it
within three words of the same clause; the sum s becomes s / sqrt(s² + 4).
"""

from __future__ import annotations

import math
import re


def _word_set(words: str) -> frozenset[str]:
    return frozenset(words.split())


_POSITIVE = _word_set(
    """good great love loved like liked enjoy enjoyed happy glad excellent wonderful
    amazing awesome fantastic nice fun beautiful best better delicious excited
    exciting interesting perfect pleased proud relaxing relaxed comfortable friendly
    helpful easy successful win won favourite favorite cool lovely brilliant
    grateful thanks thank hope calm kind"""
)
_NEGATIVE = _word_set(
    """bad terrible awful hate hated dislike sad angry upset boring bored tired sick
    ill worst worse difficult problem annoying annoyed disappointed disappointing
    horrible ugly lonely worried afraid scared stressed stressful painful pain fail
    failed lost cry cried hurt broken rude nervous unhappy miserable"""
)
_NEGATORS = _word_set(
    """not no never nothing nobody none neither nor without hardly cannot
    don't doesn't didn't isn't wasn't aren't weren't can't couldn't won't wouldn't
    shouldn't haven't hasn't dont doesnt didnt isnt wasnt arent cant couldnt wont"""
)
_NEGATION_REACH = 3
_CLAUSE_BREAK = re.compile(r"[.,;:!?()\n]+")
_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")


def lexicon_sentiment(text: str) -> float:
    score = 0
    for clause in _CLAUSE_BREAK.split(text.lower().replace("\u2019", "'")):
        reach = 0
        for word in _WORD.findall(clause):
            if word in _NEGATORS:
                reach = _NEGATION_REACH
                continue
            polarity = (word in _POSITIVE) - (word in _NEGATIVE)
            score += -polarity if reach > 0 else polarity
            reach = max(reach - 1, 0)
    return round(score / math.sqrt(score * score + 4), 3)
