"""Write ops/data/sample_utterances.jsonl: a few thousand utterances from 50
learners, the same every time (fixed seed), for `ops/load` and demos.

    uv run python ops/make_sample.py [--learners 50] [--seed 20250301] [--out PATH]
        [--end YYYY-MM-DD]

Each learner has a home time zone (timestamps carry its real offset,
daylight-saving changes included), a few weak spots that their mistakes
lean towards, and conversations of 5-25 utterances spread over March 2025
(the committed ops/data/sample_utterances.jsonl), or, with --end DAY, over
the 28 days before DAY less one: DAY-29 to DAY-2 local time, so that every
timestamp lies in the past and at most 31 days back (ops/up passes today's
UTC date and loads that file). --end only moves the conversations in time:
the seed draws the same learners, ids, texts and mistakes either way.

Each line is an utterance as POST /v1/utterances takes it,
plus `user_name`, `user_email` and `conversation_title`, which `ops/load`
uses to create the learner and the conversation. One line in ten has no
`utterance_id`, so the loader's derived ids get exercised too.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from datetime import date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

OUT = Path(__file__).resolve().parent / "data" / "sample_utterances.jsonl"
START = datetime(2025, 3, 1)
DAYS = 31  # the seed draws a day in range(DAYS) either way, so --end changes dates only
RECENT_DAYS = 28  # with --end: conversations start DAY-29 .. DAY-2 (local)

FILL = {
    "place": ["market", "library", "station", "beach", "office", "museum", "park", "cinema"],
    "thing": ["bicycle", "umbrella", "laptop", "jacket", "camera", "guitar", "notebook"],
    "food": ["apples", "pasta", "sushi", "soup", "bread", "rice", "cheese", "pancakes"],
    "topic": ["history", "music", "cooking", "football", "photography", "politics"],
    "city": ["Lisbon", "Osaka", "Toronto", "Nairobi", "Lyon", "Pune", "Bogotá"],
    "person": ["my brother", "my teacher", "our neighbour", "my best friend", "my boss"],
}

# (category, subcategory): sentences that contain that mistake.
MISTAKES: dict[tuple[str, str], list[str]] = {
    ("grammar", "past tense"): [
        "Yesterday I goed to the {place} with {person}.",
        "Last week we buyed a new {thing}.",
        "{Person} teached me how to cook {food}.",
        "When I was young I runned every morning.",
    ],
    ("grammar", "subject-verb agreement"): [
        "He go to the {place} every day.",
        "My sister don't like {food}.",
        "They was at the {place} all afternoon.",
        "The people in {city} is very friendly.",
    ],
    ("grammar", "articles"): [
        "I saw a elephant near the {place}.",
        "She is best student in our {topic} class.",
        "We went to {place} by the bus.",
        "I want to buy an {thing} for my birthday.",
    ],
    ("grammar", "prepositions"): [
        "I am interested on {topic}.",
        "We arrived to the {place} late.",
        "It depends of the weather in {city}.",
        "I have lived here since three years.",
    ],
    ("vocabulary", "word choice"): [
        "I made a photo of the {place}.",
        "Can you borrow me your {thing}?",
        "I did a big mistake with the {food}.",
        "{Person} said me a funny story.",
    ],
    ("vocabulary", "false friends"): [
        "Actually I live in {city}, but I will move soon.",
        "The course was very sensible and I cried.",
        "I assisted to a concert about {topic}.",
    ],
    ("spelling", "ie/ei"): [
        "I recieve many emails about {topic}.",
        "My nieghbour has a {thing}.",
    ],
    ("spelling", "double letters"): [
        "It was the begining of my {topic} course.",
        "I am realy happy with my new {thing}.",
        "We had a great oportunity in {city}.",
    ],
    ("word order", "adverb placement"): [
        "I like very much {food}.",
        "She speaks very well English.",
        "I go always to the {place} on Sunday.",
    ],
    ("word order", "questions"): [
        "Where you are going after the {place}?",
        "Why she doesn't like {food}?",
    ],
}
CORRECT = [
    "I usually take the bus to the {place}.",
    "My favourite food is {food}.",
    "I would like to visit {city} next summer.",
    "{Person} plays the guitar very well.",
    "Could you tell me more about {topic}?",
    "I need a new {thing} for work.",
    "It was raining, so we stayed at home.",
]
TITLES = ["Small talk", "At the {place}", "Talking about {topic}", "Planning a trip to {city}",
          "Ordering {food}", "Describing my {thing}", "Weekend plans"]  # fmt: skip
FIRST = ["Ana", "Bilal", "Chen", "Dara", "Emeka", "Fatima", "Giulia", "Hiro", "Ines", "Jonas",
         "Kavya", "Luis", "Mei", "Nour", "Olga", "Pedro", "Quynh", "Rahul", "Sofia", "Tariq"]  # fmt: skip
LAST = ["Silva", "Khan", "Wang", "Okafor", "Rossi", "Tanaka", "Müller", "García", "Nguyen",
        "Sharma", "Haddad", "Ivanova", "Mensah", "Dubois", "Kim"]  # fmt: skip
# Half-hour offsets and both March DST changes (US 9 March, EU 30 March) included.
ZONES = ["Asia/Kolkata", "America/New_York", "Europe/Berlin", "Asia/Tokyo", "America/Sao_Paulo",
         "Africa/Lagos", "Europe/London", "America/Los_Angeles", "Australia/Adelaide",
         "Asia/Kathmandu", "UTC"]  # fmt: skip


def fill(template: str, rng: random.Random) -> str:
    values = {k: rng.choice(v) for k, v in FILL.items()}
    values["Person"] = values["person"][0].upper() + values["person"][1:]
    return template.format(**values)


def utterance(rng: random.Random, weak: list[tuple[str, str]]) -> tuple[str, list[dict], int]:
    kinds = list(MISTAKES)
    count = rng.choices([0, 1, 2, 3], weights=[25, 45, 22, 8])[0]
    chosen = [rng.choice(weak) if rng.random() < 0.7 else rng.choice(kinds) for _ in range(count)]
    sentences = [fill(rng.choice(MISTAKES[k]), rng) for k in chosen]
    if not sentences or rng.random() < 0.4:
        sentences.insert(rng.randrange(len(sentences) + 1), fill(rng.choice(CORRECT), rng))
    errors = [{"category": c, "subcategory": s} for c, s in chosen]
    words = rng.choices(range(9), weights=[20, 18, 16, 14, 10, 8, 6, 5, 3])[0]
    return " ".join(sentences), errors, words


def generate(learners: int, seed: int, end: date | None = None) -> list[dict]:
    rng = random.Random(seed)
    start, days = START, DAYS
    if end is not None:
        # The last conversation starts on DAY-2 by 22:59 local and runs < 1 h:
        # before DAY 00:00 UTC even at UTC-12, so never in the future.
        start, days = datetime.combine(end, time()) - timedelta(days=RECENT_DAYS + 1), RECENT_DAYS
    lines = []
    for n in range(1, learners + 1):
        user_id = f"learner-{n:03d}"
        first, last = rng.choice(FIRST), rng.choice(LAST)
        zone = ZoneInfo(rng.choice(ZONES))
        weak = rng.sample(list(MISTAKES), 3)
        for c in range(1, rng.randint(3, 8) + 1):
            conversation_id = f"{user_id}-conv-{c:02d}"
            title = fill(rng.choice(TITLES), rng)
            day = rng.randrange(DAYS) * days // DAYS
            local = start + timedelta(days=day, hours=rng.randint(7, 22),
                                      minutes=rng.randrange(60))  # fmt: skip
            moment = local.replace(tzinfo=zone)
            for u in range(1, rng.randint(5, 25) + 1):
                moment += timedelta(seconds=rng.randint(8, 120))
                text, errors, words = utterance(rng, weak)
                line = {
                    "utterance_id": f"{conversation_id}-{u:03d}",
                    "user_id": user_id,
                    "conversation_id": conversation_id,
                    "text": text,
                    "timestamp": moment.astimezone(zone).isoformat(),
                    "errors": errors,
                    "words_learned": words,
                    "user_name": f"{first} {last}",
                    "user_email": f"{first.lower()}.{user_id}@example.com",
                    "conversation_title": title,
                }
                if rng.random() < 0.1:
                    del line["utterance_id"]
                lines.append(line)
    lines.sort(key=lambda line: datetime.fromisoformat(line["timestamp"]))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="ops/make_sample.py", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--learners", type=int, default=50)
    parser.add_argument("--seed", type=int, default=20250301)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument(
        "--end",
        type=date.fromisoformat,
        help="date conversations in the 28 days before this day less one (DAY-29 .. DAY-2), "
        "instead of March 2025",
    )
    args = parser.parse_args()
    lines = generate(args.learners, args.seed, args.end)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", encoding="utf-8") as f:
        for line in lines:
            f.write(json.dumps(line, ensure_ascii=False) + "\n")
    learners = len({line["user_id"] for line in lines})
    conversations = len({line["conversation_id"] for line in lines})
    sys.stdout.write(
        f"{args.out}: {len(lines)} utterances, {learners} learners, {conversations} conversations\n"
    )


if __name__ == "__main__":
    main()
