"""Writes tuneloop's own set of general prompts (everyday knowledge, writing, reasoning) for self-replay.

`train.guard.replay: {self: N}` asks the base model to answer the first N of these prompts and replays
its own replies while training, so the model keeps answering general requests as it did before,
with no general dataset at hand. The prompts are composed here from our own topic and task lists
(no third-party text), in a fixed, seeded order, so N prompts are the same N on every machine.

Run ``python -m tuneloop.data.general_prompts [N]`` to print them, one JSON object per line.
"""

from __future__ import annotations

import json
import random
import sys

PROMPT_SET_VERSION = 1  # part of the self-replay cache key: a change to the lists below regenerates the replies

TOPICS = (
    "photosynthesis", "the water cycle", "how a bicycle stays upright", "why the sky is blue", "volcanoes",
    "the seasons", "how vaccines work", "the moon's phases", "tides", "rainbows", "how bread rises",
    "compound interest", "the printing press", "how a refrigerator keeps food cold", "earthquakes",
    "the human heart", "bees and pollination", "how airplanes fly", "recycling plastic", "the Roman Empire",
    "electric circuits", "the food chain", "how a compass works", "clouds", "sleep", "the metric system",
    "how maps show height", "fractions", "the speed of sound", "magnets", "how a library is organized",
    "the Olympic Games", "coral reefs", "how a camera takes a picture", "gravity", "a healthy breakfast",
    "the alphabet's history", "how rivers form", "solar panels", "chess",
)
TASKS = (
    "Explain {topic} in two or three sentences.",
    "What is the most important thing to know about {topic}?",
    "Give a short, simple explanation of {topic} for a ten-year-old.",
    "Write one paragraph about {topic}.",
    "List three facts about {topic}.",
    "What is a common misunderstanding about {topic}?",
)
STANDALONE = (
    "How many days are there in a leap year?", "What is 12 times 7?", "Name the largest ocean on Earth.",
    "Write a polite email declining a meeting invitation.", "Suggest three names for a pet rabbit.",
    "What is the difference between weather and climate?", "Translate 'good morning' into French.",
    "Give me a tip for remembering new words in a language.", "What does a thermometer measure?",
    "Write a haiku about autumn leaves.", "If a train travels 60 km in one hour, how far does it go in 3 hours?",
    "What is the capital of Japan?", "How do I boil an egg?", "Why do we have leap years?",
    "Summarize the story of Little Red Riding Hood in two sentences.", "What are the three states of water?",
    "Give two reasons to drink enough water.", "What is a noun? Give an example.",
    "How can I make a small garden on a balcony?", "What is the boiling point of water at sea level?",
)


def general_prompts(count: int | None = None, seed: int = 0) -> list[str]:
    """The first `count` prompts of the set (all when None), in a fixed shuffled order."""
    prompts = [task.format(topic=topic) for topic in TOPICS for task in TASKS] + list(STANDALONE)
    random.Random(seed).shuffle(prompts)
    return prompts if count is None else prompts[:count]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    for prompt in general_prompts(int(args[0]) if args else None):
        print(json.dumps({"prompt": prompt}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
